"""The one exception of ``attnzoo train``; kept apart so the command line can catch it without importing torch."""


class TrainError(ValueError):
    """A problem with the user's request (data, model, module, options): printed as one clear line by the CLI."""
