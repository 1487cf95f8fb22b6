"""Every node type of infra/cluster-tpu.yaml installs the JAX of its accelerator.

A node's setup commands are read as Ray reads them (its own defaults filled in, then a node type's
own `worker_setup_commands` in place of the global ones); the install.sh command among them is
run with `--dry-run`, which prints the pip command; the extras it names are looked up in
pyproject.toml. A TPU node must get `jax[tpu]`, a GPU node `jax[cuda*]`, a CPU node no JAX extra,
all at the pinned jax version.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "infra" / "cluster-tpu.yaml"
INSTALL = REPO / "infra" / "install.sh"


def pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def accelerator_of(node_type: dict) -> str:
    node = node_type.get("node_config", {})
    if "acceleratorType" in node:  # a TPU VM
        return "tpu"
    if any("nvidia" in g.get("acceleratorType", "") for g in node.get("guestAccelerators", [])):
        return "gpu"
    return "gpu" if node_type.get("resources", {}).get("GPU") else "cpu"


def setup_commands(config: dict) -> dict[str, list[str]]:
    """node type -> the setup commands Ray runs on it."""
    from ray.autoscaler._private.util import fillout_defaults

    full = fillout_defaults(copy.deepcopy(config))  # merges setup_commands into head/worker ones
    out = {}
    for name, node_type in full["available_node_types"].items():
        if name == full["head_node_type"]:
            out[name] = full["head_setup_commands"]
        else:  # as the autoscaler's _get_node_type_specific_fields
            out[name] = node_type.get("worker_setup_commands", full["worker_setup_commands"])
    return out


_dry_runs: dict[tuple, str] = {}


def pip_command(install_args: tuple[str, ...]) -> str:
    if install_args not in _dry_runs:
        res = subprocess.run(["bash", str(INSTALL), *install_args, "--dry-run"], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        _dry_runs[install_args] = res.stdout.strip()
    return _dry_runs[install_args]


def jax_extras(commands: list[str]) -> list[str]:
    """The `jax[...]` requirements the commands install (through install.sh and pyproject extras)."""
    extras_of = pyproject()["optional-dependencies"]
    found = []
    installs = [c for c in commands if "infra/install.sh" in c]
    assert len(installs) == 1, f"expected one infra/install.sh command, got {installs}"
    for command in commands:
        assert not re.search(r"pip3? install[^;&|]*\bjax", command), f"JAX installed outside install.sh: {command}"
    args = shlex.split(installs[0].split("infra/install.sh", 1)[1].split("&&")[0])
    pip = pip_command(tuple(args))
    extras = re.search(r"\.\[([^\]]*)\]", pip).group(1).split(",")
    for extra in extras:
        found += [r for r in extras_of[extra] if r.startswith("jax[")]
    return found


def mismatches(config: dict) -> list[str]:
    jax_pin = next(r for r in pyproject()["dependencies"] if r.startswith("jax=="))
    wrong = []
    for name, commands in setup_commands(config).items():
        want = accelerator_of(config["available_node_types"][name])
        got = jax_extras(commands)
        kinds = [re.match(r"jax\[([^\]]+)\]", r).group(1) for r in got]
        ok = {"cpu": kinds == [], "tpu": kinds == ["tpu"], "gpu": len(kinds) == 1 and kinds[0].startswith("cuda")}
        if not ok[want]:
            wrong.append(f"{name} ({want}) installs {got or 'no JAX extra'}")
        wrong += [f"{name}: {r} is not at {jax_pin}" for r in got if not r.endswith(jax_pin[3:])]
    return wrong


def test_every_node_type_installs_the_jax_of_its_accelerator():
    config = yaml.safe_load(CLUSTER.read_text())
    kinds = {accelerator_of(t) for t in config["available_node_types"].values()}
    assert kinds == {"cpu", "gpu", "tpu"}  # the check below covers all three
    assert mismatches(config) == []


def test_the_cluster_file_is_valid_for_ray():
    import json
    import os

    import jsonschema
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        jsonschema.validate(yaml.safe_load(CLUSTER.read_text()), json.load(f))


def test_a_wrong_install_is_caught():
    config = yaml.safe_load(CLUSTER.read_text())
    cpu_on_tpu = copy.deepcopy(config)
    tpu_type = cpu_on_tpu["available_node_types"]["tpu_v5p_64"]
    tpu_type["worker_setup_commands"] = [c.replace("--accelerator tpu", "--accelerator cpu")
                                         for c in tpu_type["worker_setup_commands"]]
    assert mismatches(cpu_on_tpu) == ["tpu_v5p_64 (tpu) installs no JAX extra"]
    no_override = copy.deepcopy(config)
    del no_override["available_node_types"]["gpu_a100"]["worker_setup_commands"]  # falls back to the CPU list
    assert mismatches(no_override) == ["gpu_a100 (gpu) installs no JAX extra"]
    tpu_on_cpu = copy.deepcopy(config)
    tpu_on_cpu["worker_setup_commands"] = [c.replace("--accelerator cpu", "--accelerator tpu")
                                           for c in tpu_on_cpu["worker_setup_commands"]]
    assert mismatches(tpu_on_cpu) == ["cpu_worker (cpu) installs ['jax[tpu]==0.10.2']"]


def test_extras_pin_the_installed_jax():
    project = pyproject()
    pin = next(r for r in project["dependencies"] if r.startswith("jax=="))[len("jax=="):]
    extras = project["optional-dependencies"]
    assert extras["tpu"] == [f"jax[tpu]=={pin}"] and extras["gpu"] == [f"jax[cuda12]=={pin}"]


def test_install_sh_accelerator_argument():
    assert pip_command(()).endswith('-e .[test]')  # the default: CPU, as before
    assert pip_command(("--accelerator", "cpu")).endswith('-e .[test]')
    assert pip_command(("--accelerator", "tpu")).endswith('-e .[test,tpu]')
    assert pip_command(("--accelerator=gpu",)).endswith('-e .[test,gpu]')
    bad = subprocess.run(["bash", str(INSTALL), "--accelerator", "rocm", "--dry-run"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "choose cpu, tpu or gpu" in bad.stderr
