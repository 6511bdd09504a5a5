import contextlib
import functools
import os

# With pytest-xdist every worker is its own process: one intra-op thread each (and in the notebook kernels they
# start) keeps N workers on N cores instead of N x N threads fighting over them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# MAC counts (attnzoo.cache) are shared by this run's workers and notebook kernels, never read from an earlier run:
# every figure a test checks is counted by the code under test in this run.
import dataclasses  # noqa: E402
import tempfile  # noqa: E402

RUN_DIR = os.path.join(tempfile.gettempdir(),
                       f"attnzoo-test-run-{os.environ.get('PYTEST_XDIST_TESTRUNUID') or os.getpid()}")
os.environ.setdefault("ATTNZOO_CACHE", RUN_DIR)

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for module tests and notebooks (e.g. cuda)")


# --- model families: one registered model stands for the variants that only scale it -------------------------

# Builder arguments that give the number of blocks of each stage (or row of an architecture table).
DEPTH_KEYS = ("layers", "depths", "block_config", "num_blocks", "repeats")

# Registration arguments that only scale a model (depths, widths, heads) or choose the attention module it plugs
# in (each attention module is tested on its own): models that differ only in these run the same code.
SCALE_KEYS = {"depth", "embed_dim", "embed_dims", "dims", "num_heads", "heads", "mlp_ratio",
              "mlp_ratios", "width", "widths", "width_mult", "width_multiplier", "channels", "planes", "expansion",
              "segment_dims", "min_rd", "img_size", "drop_path_rate", "stem_width", "attn_layer", "attn_kwargs",
              "attn_stages", "layer_scale_init_value", "hidden_dim", "tokens_mlp_dim", "channels_mlp_dim",
              "patch_size", "window_size", "base_width", "scale", "drop_rate", "growth_rate",
              "dim", "alpha", "key_dim", "decoder_dim", "se_reduction",
              "n_div",  # ShiftViT: the shifted share of the channels (4 / n_div), same code
              "reduced_dims",  # DynaMixer: channels per segment in the mixing-matrix generator, same code
              "transitions",  # ViP, DynaMixer: which stages end in the 2x2 patch merging, same code
              "exp_ratios", "dim_heads",  # EMO: expansion ratios and head widths per stage, same code
              "kernel_size",  # Conv2Former: the modulation's depthwise kernel (7 in N, 11 in T/S/B/L), same code
              "num_classes", "num_features",  # the classifier's and the last layer's widths
              "stride", "base_dims",  # PiT: the patch embedding's stride and the per-head widths
              "init_values", "eta",  # CaiT's and XCiT's layer-scale initial values
              "num_vit",  # EfficientFormer: how many of the last stage's blocks are attention blocks (at least one)
              "expand_ratio",  # MobileViT: the inverted residuals' expansion
              "tokenizer_layers",  # CCT: convolutions in the tokenizer
              } | set(DEPTH_KEYS)  # blocks per stage or per row


def _meta_params(name: str) -> int:
    counts = _all_meta_params()
    if name not in counts:  # registered after the counts were taken (a test's own registration)
        counts[name] = _count_on_meta(name)
    return counts[name]


def _count_on_meta(name: str) -> int:
    """Parameters of model ``name`` built as ``attnzoo check`` builds it (meta device, 10 classes), through the
    check's own build, which remembers it in this run's folder: the tests that run the check do not build it again."""
    from attnzoo import create_model
    from attnzoo.check import build_problem

    counts = []
    problem = build_problem("model", name, inspect=lambda m: counts.append(sum(p.numel() for p in m.parameters())))
    if counts:
        return counts[0]
    if problem:  # it does not build: the check's tests report it; here any count will do
        return 0
    with torch.device("meta"):  # remembered by another worker's check build
        return sum(p.numel() for p in create_model(name, num_classes=10).parameters())


@functools.cache
def _all_meta_params() -> dict[str, int]:
    """Every registered model's parameter count, taken once per run: each xdist worker starts at its own share of
    the list and stores each count in this run's folder, then reads the counts the other workers stored."""
    import json

    from attnzoo import list_models

    folder = os.path.join(RUN_DIR, "meta-params")
    os.makedirs(folder, exist_ok=True)
    names = list_models()
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    start = worker * len(names) // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    counts = {}
    for name in names[start:] + names[:start]:
        path = os.path.join(folder, f"{name}.json")
        try:
            with open(path) as f:
                counts[name] = json.load(f)
            continue
        except (OSError, ValueError):
            pass
        counts[name] = _count_on_meta(name)
        with open(f"{path}.{worker}.tmp", "w") as f:
            json.dump(counts[name], f)
        os.replace(f"{path}.{worker}.tmp", path)
    return counts


def model_families() -> list[list[str]]:
    """Registered models grouped by family: the same builder with the same arguments other than SCALE_KEYS."""
    from attnzoo import list_models
    from attnzoo.registry import model_entry

    families: dict[tuple, list[str]] = {}
    for name in list_models():
        entry = model_entry(name)
        key = (entry.builder, tuple(sorted((k, repr(v)) for k, v in entry.defaults.items() if k not in SCALE_KEYS)))
        families.setdefault(key, []).append(name)
    return list(families.values())


def _builder_defaults(name: str) -> dict:
    """The registered arguments of model ``name`` over its builder's own defaults (a stage layout the registry
    line leaves to the builder, like ESPNet's ``depths``, counts as well)."""
    import inspect

    from attnzoo.registry import model_entry

    entry = model_entry(name)
    try:
        params = inspect.signature(entry.builder).parameters.values()
    except (TypeError, ValueError):
        params = ()
    return {**{p.name: p.default for p in params if p.default is not p.empty}, **entry.defaults}


def _int_tuple(value) -> bool:
    return isinstance(value, tuple) and bool(value) and all(isinstance(d, int) for d in value)


def shallow_kwargs(name: str, blocks: int = 1) -> dict:
    """Keyword arguments that cap every stage of model ``name`` at ``blocks`` blocks, where its builder takes them
    (a per-stage count in ``DEPTH_KEYS`` or ``depth``, a transformer's integer ``depth``, CoaT's parallel depth, the
    repeats of an architecture table's rows). Later blocks of a stage repeat the code of the second one; two blocks
    per stage run every code path at a fraction of the cost."""
    defaults = _builder_defaults(name)
    kwargs = {k: tuple(min(blocks, d) for d in v) for k, v in defaults.items()
              if k in (*DEPTH_KEYS, "depth") and _int_tuple(v)}
    if isinstance(defaults.get("depth"), int) and defaults["depth"] < 50:  # transformer depth, not ResNet-50's
        kwargs["depth"] = min(blocks, defaults["depth"])
        local = defaults.get("local_up_to_layer")
        if isinstance(local, int):  # ConViT: GPSA blocks first, then self-attention blocks; keep some of each
            kwargs["local_up_to_layer"] = min(blocks, local)
            kwargs["depth"] = kwargs["local_up_to_layer"] + min(blocks, defaults["depth"] - local)
    if defaults.get("parallel_depth"):  # CoaT's parallel blocks after the serial stages
        kwargs["parallel_depth"] = min(blocks, defaults["parallel_depth"])
    arch = defaults.get("arch")
    if isinstance(arch, tuple) and arch and all(isinstance(s, tuple) and all(dataclasses.is_dataclass(r)
                                                and hasattr(r, "repeats") for r in s) for s in arch):
        # an architecture table of rows (EfficientNet, MnasNet, MobileNetV3): each row keeps its first blocks
        kwargs["arch"] = tuple(tuple(dataclasses.replace(r, repeats=min(blocks, r.repeats)) for r in s) for s in arch)
    return kwargs


@pytest.fixture(scope="session")
def shallow():
    """``shallow(name, blocks=1)``: see ``shallow_kwargs``."""
    return shallow_kwargs


def smallest(names) -> str:
    return min(names, key=_meta_params)


def model_family_representatives() -> list[str]:
    """The smallest registered model of every family."""
    return sorted(smallest(names) for names in model_families())


@pytest.fixture(scope="session")
def family_smallest():
    """``family_smallest(name, among)``: the smallest model of ``name``'s family among the names ``among``."""
    families = {name: names for names in model_families() for name in names}

    def pick(name: str, among) -> str:
        return smallest([n for n in families[name] if n in among])

    return pick


def pytest_generate_tests(metafunc):
    if "family_model" in metafunc.fixturenames:
        metafunc.parametrize("family_model", model_family_representatives())


# Tests known to take seconds each, longest first: they start the run, so that its end is made of quick tests
# that --dist worksteal (pyproject.toml) shares out evenly, and no worker is left running a long one alone.
SLOW_FIRST = ("test_tools.py::test_the_repository_itself_passes", "test_contributor_tools.py::test_catalogue_only",
              "test_train.py::test_ddp", "test_tools.py::test_run_reports_failing_cell", "test_notebooks.py::",
              "test_compile.py::test_model_family", "test_timm_parity.py::", "test_reported.py::test_macs")


def pytest_collection_finish(session):
    """What collection built (the registry, every parametrization) lives to the end: out of the collector's sight,
    and fewer collections of the young objects the tests make (about a third of the time Python spent collecting)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        return next((i for i, key in enumerate(SLOW_FIRST) if key in item.nodeid), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the same order in every worker, as xdist requires


def _block_inputs(block, channels: int, n: int, h: int, w: int, device="cpu") -> tuple:
    """Positional inputs for a registered block: its own ``example_inputs(n, h, w, device)`` where it documents
    other inputs (a list of pyramid levels, ...), else one (n, channels, h, w) map per required forward argument."""
    if hasattr(block, "example_inputs"):
        return tuple(block.example_inputs(n, h, w, device=device))
    import inspect

    required = [p for p in inspect.signature(block.forward).parameters.values()
                if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    return tuple(torch.randn(n, channels, h, w, device=device) for _ in required)


# --- building models fast on the CPU ------------------------------------------------------------------------------

@contextlib.contextmanager
def _tensor_methods_replaced(**methods):
    """``torch.Tensor.<name>`` replaced by the given functions for the duration of the block."""
    saved = {name: getattr(torch.Tensor, name) for name in methods}
    try:
        for name, method in methods.items():
            setattr(torch.Tensor, name, method)
        yield saved
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


_SAMPLES = 1 << 22  # numbers per cached block of samples


@functools.cache
def _sample_blocks() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"uniform": torch.rand(_SAMPLES, generator=g), "normal": torch.randn(_SAMPLES, generator=g)}


@contextlib.contextmanager
def _cheap_random_fills():
    """While a model is built on the CPU, ``Tensor.uniform_`` and ``Tensor.normal_`` (what ``nn.init`` and timm's
    initialisers call) copy their numbers from one cached block of samples, at an offset that moves with every fill,
    instead of drawing them: drawing is about 90 % of the time it takes to build a model. Each tensor still gets
    uniform or normal samples with the bounds, mean and std it asked for; only the draws recur across tensors. A
    fill with its own generator, or of a tensor that is not a float32/float64 CPU tensor, draws as usual."""
    blocks, offset = _sample_blocks(), [0]

    def copy_samples(t: torch.Tensor, kind: str, scale: float, shift: float) -> torch.Tensor:
        n, start = t.numel(), offset[0] % _SAMPLES
        offset[0] += n + 7919  # a prime step: consecutive tensors do not start where the last one did
        contiguous = t.is_contiguous()
        flat = t.view(-1) if contiguous else torch.empty(n, dtype=t.dtype)
        done = 0
        while done < n:
            k = min(n - done, _SAMPLES - start)
            torch.mul(blocks[kind][start:start + k], scale, out=flat[done:done + k])
            done, start = done + k, 0
        if shift:
            flat.add_(shift)
        if not contiguous:
            t.copy_(flat.view(t.shape))
        return t

    def drawn_as_usual(t: torch.Tensor, generator) -> bool:
        return generator is not None or t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64)

    def uniform_(t, *bounds, generator=None, **named):  # Tensor.uniform_(from=0, to=1), ``from`` a keyword
        a, b = [*bounds, *[named.get("from", 0.0), named.get("to", 1.0)][len(bounds):]]
        if drawn_as_usual(t, generator):
            return saved["uniform_"](t, a, b, generator=generator)
        with torch.no_grad():
            return copy_samples(t, "uniform", b - a, a)

    def normal_(t, mean=0.0, std=1.0, *, generator=None):
        if drawn_as_usual(t, generator):
            return saved["normal_"](t, mean, std, generator=generator)
        with torch.no_grad():
            return copy_samples(t, "normal", std, mean)

    with _tensor_methods_replaced(uniform_=uniform_, normal_=normal_) as saved:
        yield


@contextlib.contextmanager
def _random_fills_skipped():
    """While a model is built, its random fills (``uniform_``, ``normal_`` and the ``erfinv_`` of truncated normals)
    do nothing and leave the allocated memory as it is: for a model whose every parameter is overwritten next."""
    def unchanged(t, *args, **kwargs):
        return t

    with _tensor_methods_replaced(uniform_=unchanged, normal_=unchanged, erfinv_=unchanged):
        yield


@pytest.fixture(scope="session")
def random_fills_skipped():
    """``with random_fills_skipped(): model = ...``: no random initialisation at all (see ``_random_fills_skipped``)."""
    return _random_fills_skipped


@pytest.fixture(scope="session")
def cheap_init():
    """``with cheap_init(): model = create_model(...)``: random initial weights without the cost of drawing them
    (see ``_cheap_random_fills``), for tests about shapes, gradients and code paths, not about initial values."""
    return _cheap_random_fills


def _randomise_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Random running statistics and affine parameters in every BatchNorm, so that eval-mode references test them."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module


@pytest.fixture
def randomise_bn():
    """``randomise_bn(module)``: random BatchNorm statistics and affine parameters (in place; returns the module)."""
    return _randomise_bn


@pytest.fixture
def block_inputs():
    """``block_inputs(block, channels, n, h, w, device)``: example positional inputs of a registered block."""
    return _block_inputs


def _assert_examples_independent(module, x: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> torch.Tensor:
    """Every example of the batch gives what it gives alone (per-example kernels or routing folded into one
    batched computation must not mix examples, and batch 1 must work); returns ``module(x)``."""
    full = module(x)
    for i in range(x.shape[0]):
        torch.testing.assert_close(full[i:i + 1], module(x[i:i + 1]), rtol=rtol, atol=atol)
    return full


@pytest.fixture
def assert_examples_independent():
    """``assert_examples_independent(module, x, rtol, atol)``: see ``_assert_examples_independent``."""
    return _assert_examples_independent


def _assert_maps_match_tokens(module, x: torch.Tensor) -> torch.Tensor:
    """A token attention gives the same on an (N, C, H, W) map as on its (N, H W, C) tokens with ``hw=(H, W)``;
    returns the map output (no gradients)."""
    with torch.no_grad():
        y = module(x)
        tokens = module(x.flatten(2).transpose(1, 2), hw=tuple(x.shape[-2:]))
    assert y.shape == x.shape
    torch.testing.assert_close(tokens.transpose(1, 2).reshape(x.shape), y)
    return y


@pytest.fixture
def assert_maps_match_tokens():
    """``assert_maps_match_tokens(module, x)``: see ``_assert_maps_match_tokens``."""
    return _assert_maps_match_tokens


def _output_shapes(model, modules, x: torch.Tensor) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Run ``model(x)`` without gradients; the output shape of each of ``modules`` (e.g. the stages) in call order,
    and the model's output."""
    shapes = []
    hooks = [m.register_forward_hook(lambda mod, i, o: shapes.append(tuple(o.shape))) for m in modules]
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes, y


@pytest.fixture
def output_shapes():
    """``shapes, y = output_shapes(model, modules, x)``: see ``_output_shapes``."""
    return _output_shapes


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    dev = request.config.getoption("--device")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"--device {dev} requested but CUDA is not available")
    return torch.device(dev)


# --- the command-line tools, tested on a temporary copy of the project -----------------------------------------

def _root():
    from attnzoo.paths import project_root

    return project_root()


@pytest.fixture
def project(tmp_path):
    """A copy of the project's metadata (catalogue, bib, README, notebooks) to break safely."""
    import shutil

    root = _root()
    for name in ("catalogue", "book/notebooks"):
        shutil.copytree(root / name, tmp_path / name)
    for name in ("references.bib", "README.md"):
        shutil.copy(root / name, tmp_path / name)
    return tmp_path


def _run(root, *args) -> int:
    from attnzoo.cli import main

    return main(["--root", str(root), *args])


def _snapshot(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def _edit_entry(root, entry_id, **changes):
    import yaml

    path = root / "catalogue" / f"{entry_id}.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    for key, value in changes.items():
        if value is None:
            del data[key]
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def run():
    """``run(root, *args)``: ``attnzoo --root ROOT ARGS...`` in this process; returns the exit status."""
    return _run


@pytest.fixture
def snapshot():
    """``snapshot(root)``: every file under root (bytes by relative path), to prove a command changed nothing."""
    return _snapshot


@pytest.fixture
def edit_entry():
    """``edit_entry(root, id, field=value, ...)``: rewrite a catalogue entry (value None deletes the field)."""
    return _edit_entry
