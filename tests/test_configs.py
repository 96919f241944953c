"""Every config and every fragment: it composes as documented (`base:` files first, then the
file's own keys), parses, and fits one `fast_dev_run` step on data the test makes itself
(tiny MPEG-4 trees in the UCF-101 and HMDB-51 layouts, the tiny synthetic set)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from csvr.cli import main
from csvr.lightning_cli import expand_configs
from tests.conftest import REPO, SYNTH_ARGS, TINY_ARGS
from tests.videos_util import make_generated_ucf_mini

CONFIGS = REPO / "configs"
ENTRY = sorted(p.name for p in CONFIGS.glob("*.yaml"))
TRAINER_FRAGMENTS = sorted(p.name for p in (CONFIGS / "trainer").glob("*.yaml"))
EXPERIMENTS = sorted(p.name for p in (CONFIGS / "experiment").glob("*.yaml"))
# What turns a trainer fragment into a one-process CPU run (the fragment is parsed as written).
TRAINER_ON_CPU = {
    "cpu.yaml": [],
    "gpu.yaml": ["--trainer.accelerator=cpu"],
    "ddp_cpu2.yaml": ["--trainer.devices=1", "--trainer.strategy=auto"],
    "slurm_4gpu.yaml": [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.plugins=null",
        "--trainer.sync_batchnorm=false",
    ],
}
EXPERIMENT_BASE = "ucf101_3cls.yaml"  # the config the experiment fragments document


# ---------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def ucf_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """3 classes x 2 generated clips in the official UCF-101 layout (CRLF lists), cut by
    `csvr make-slice`; never the shared real clips (small and fast): (root, split_dir)."""
    return make_generated_ucf_mini(tmp_path_factory.mktemp("ucf_tiny"))


def data_class(config: str) -> str:
    """The data class_path of a config, following its `base:` files."""
    doc = yaml.safe_load((CONFIGS / config).read_text())
    path = doc.get("data", {}).get("class_path")
    bases = doc.get("base", [])
    for base in [bases] if isinstance(bases, str) else reversed(bases):
        path = path or data_class(base)
    return path or ""


def data_args(config: str, request: pytest.FixtureRequest) -> list[str]:
    name = data_class(config)
    if name.endswith("SyntheticMotionDataModule"):
        return [f"--data.root={request.getfixturevalue('tiny_synthetic')}", *SYNTH_ARGS]
    if name.endswith("UCF101DataModule"):
        root, lists = request.getfixturevalue("ucf_tiny")
    elif name.endswith("HMDB51DataModule"):
        root, lists = request.getfixturevalue("hmdb_tiny")
    else:
        raise AssertionError(f"{config}: no test data for {name!r}")
    return [f"--data.root={root}", f"--data.split_dir={lists}", "--data.test_segments=6"]


def printed(args: list[str]) -> dict[str, Any]:
    """The merged config `csvr fit ... --print_config` prints, as a dict."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None), out.getvalue()[-2000:]
    return yaml.safe_load(out.getvalue())


def flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": value} of a nested mapping (lists are values)."""
    if not isinstance(doc, dict) or not doc:
        return {prefix: doc}
    out: dict[str, Any] = {}
    for k, v in doc.items():
        out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def own(config: Path) -> dict[str, Any]:
    """The file's own keys (without `base:`)."""
    doc = yaml.safe_load(config.read_text())
    doc.pop("base", None)
    return doc


def contains(got: Any, want: Any) -> bool:
    """`want` is in `got`: every key of a mapping (recursively; the parser adds defaults to
    class init_args), lists element by element, other values equal."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and contains(got[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(contains, got, want))
    return got == want


# ---------------------------------------------------------------------------- composition
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_expand_configs_puts_bases_first_relative_to_the_file(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "trainer:\n  max_epochs: 3\n")
    write(tmp_path / "frag" / "b.yaml", "trainer: {devices: 1}\n")
    child = write(
        tmp_path / "sub" / "child.yaml",
        "# comment\nbase:\n  - ../a.yaml\n  - ../frag/b.yaml\nmodel:\n  lr: 1e-3  # kept verbatim\n",
    )
    args = expand_configs(["fit", "--config", str(child), "--trainer.max_epochs=5"])
    bases = [str(child.parent / "../a.yaml"), str(child.parent / "../frag/b.yaml")]
    assert args == [
        "fit",
        "--config",
        bases[0],
        "--config",
        bases[1],
        "--config",
        "# comment\nmodel:\n  lr: 1e-3  # kept verbatim\n",
        "--trainer.max_epochs=5",
    ]
    # a chain: grandchild -> child -> (a, b); `-c` and `--config=` are configs too
    grand = write(tmp_path / "grand.yaml", "base: sub/child.yaml\n")
    assert expand_configs(["-c", str(grand)]) == args[1:7]
    assert expand_configs([f"--config={grand}"]) == args[1:7]
    # files without `base:`, YAML strings and missing files pass through unchanged
    assert expand_configs(["--config", str(a), "--config", "{trainer: {devices: 2}}", "--config", "nope.yaml"]) == [
        "--config",
        str(a),
        "--config",
        "{trainer: {devices: 2}}",
        "--config",
        "nope.yaml",
    ]


def test_expand_configs_errors_name_the_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "base: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"bad\.yaml.*missing\.yaml.*relative to the file"):
        expand_configs(["--config", str(bad)])
    write(tmp_path / "x.yaml", "base: y.yaml\n")
    loop = write(tmp_path / "y.yaml", "base: x.yaml\n")
    with pytest.raises(ValueError, match="loop"):
        expand_configs(["--config", str(loop)])
    odd = write(tmp_path / "odd.yaml", "base: {a: 1}\n")
    with pytest.raises(ValueError, match="file name or a list"):
        expand_configs(["--config", str(odd)])


def test_entry_points_are_all_there() -> None:
    assert {"synthetic.yaml", "ucf101.yaml", "ucf101_L.yaml", "hmdb51.yaml", "ucf101_3cls.yaml", "noise.yaml"} <= set(
        ENTRY
    )
    assert set(TRAINER_FRAGMENTS) == set(TRAINER_ON_CPU), "a new trainer fragment needs its CPU overrides here"
    assert EXPERIMENTS, "configs/experiment/ is empty"


@pytest.mark.parametrize("config", [c for c in ENTRY if "base" in yaml.safe_load((CONFIGS / c).read_text())])
def test_a_config_is_its_bases_plus_its_own_keys(config: str) -> None:
    """Independent of jsonargparse's merge: the parsed config holds the file's own values, and
    every other value is the one of its parsed bases."""
    bases = yaml.safe_load((CONFIGS / config).read_text())["base"]
    bases = [bases] if isinstance(bases, str) else bases
    expected = flat(printed([a for b in bases for a in ("--config", str(CONFIGS / b))]))
    mine = own(CONFIGS / config)
    got = printed(["--config", str(CONFIGS / config)])
    assert contains(got, mine)
    mine_keys = flat(mine)

    def inherited(doc: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in doc.items() if not any(k == m or k.startswith(m + ".") for m in mine_keys)}

    assert inherited(flat(got)) == inherited(expected)


@pytest.mark.parametrize(
    "fragment", [f"trainer/{f}" for f in TRAINER_FRAGMENTS] + [f"experiment/{f}" for f in EXPERIMENTS]
)
def test_fragments_parse_onto_their_base(fragment: str) -> None:
    base = "synthetic.yaml" if fragment.startswith("trainer/") else EXPERIMENT_BASE
    got = printed(["--config", str(CONFIGS / base), "--config", str(CONFIGS / fragment)])
    assert contains(got, own(CONFIGS / fragment))


# ---------------------------------------------------------------------------- one step each
def fit_one_step(configs: list[str], extra: list[str], request: pytest.FixtureRequest, tmp_path: Path) -> None:
    args = ["fit", *(a for c in configs for a in ("--config", str(CONFIGS / c))), *data_args(configs[0], request)]
    swaps_net = any(a.startswith("--model.net.init_args.num_steps") for a in extra)  # not a CSVRNet
    tiny = [a for a in TINY_ARGS if not (swaps_net and a.startswith("--model.net.init_args.variant"))]
    args += [*tiny, *extra, "--trainer.fast_dev_run=1", f"--trainer.default_root_dir={tmp_path}"]
    assert main(args) == 0


@pytest.mark.parametrize("config", ENTRY)
def test_every_config_fits_one_step(config: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The real config file, shrunk to CPU/tiny by overrides, runs a fast_dev_run fit."""
    fit_one_step([config], [], request, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("fragment", TRAINER_FRAGMENTS)
def test_every_trainer_fragment_fits_one_step(fragment: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # TINY_ARGS pins CPU, 32-bit: the fragment's other keys (and TRAINER_ON_CPU's undoing) apply
    fit_one_step(["synthetic.yaml", f"trainer/{fragment}"], TRAINER_ON_CPU[fragment], request, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("fragment", EXPERIMENTS)
def test_every_experiment_fits_one_step(fragment: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    net = yaml.safe_load((CONFIGS / "experiment" / fragment).read_text()).get("model", {}).get("net", {})
    # a fragment that swaps the network class (the CNN baseline) takes its T from data.num_p
    extra = ["--model.net.init_args.num_steps=2"] if "class_path" in net else []
    fit_one_step([EXPERIMENT_BASE, f"experiment/{fragment}"], extra, request, tmp_path)
