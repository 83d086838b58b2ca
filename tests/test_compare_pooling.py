"""compare.py pools only identical computations (issue 22, items 1 and 2) and lists the paper cells without
runs only when asked (issue 23, item 7), through the command (in-process, as ``python scripts/compare.py``).

Run directories are hand-written results.json files, each with the resolved ``config`` train.py records;
where a run must be a paper cell's recipe, the config is composed from the experiment file with Hydra's
compose API, as ``python train.py experiment=NAME`` composes it.
"""

from __future__ import annotations

import copy
import csv
import io
import shutil

import pytest
from fake_data import write_fake_run
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from script_main import run_main

import trainer.spec
from analysis import runs as run_reader
from analysis.paper_recipes import CONFIGS, candidate_names
from analysis.paper_tables import comparable_cells, load_paper_cells
from scripts import compare

T975_1 = 12.706205  # t_{0.975,1}

# The resolved config of a small digits run, as results.json records it (the keys compare reads and a few
# operational ones).
DIGITS = {
    "model": {"name": "wide_resnet", "depth": 10, "width": 1},
    "dataset": {
        "name": "digits",
        "root": "/data",
        "num_workers": 0,
        "download": True,
        "cutout_mode": "per_batch",
    },
    "optimizer": {
        "name": "sam",
        "adaptive": False,
        "eta": 0.0,
        "momentum": 0.9,
        "perturbation": "per_replica",
    },
    "schedule": {"name": "cosine", "warmup_epochs": 0},
    "logger": {"name": "none"},
    "rho": 0.05,
    "m": None,
    "seed": 0,
    "epochs": 8,
    "batch_size": 64,
    "lr": 0.05,
    "weight_decay": 5e-4,
    "augment": "basic",
    "label_noise": 0.0,
    "label_noise_protocol": "uniform",
    "precision": "auto",
    "device": "cpu",
    "trainer": {
        "limit_train_batches": None,
        "limit_val_batches": None,
        "eval_batch_size": 512,
        "log_every_n_steps": 10,
        "allow_config_change": False,
    },
}
SPEC = {"uses_sam": True, "optimizer": "sam", "rho": 0.05, "m": 64, "per_device_batch": 64, "world_size": 1}


def digits_run(root, name, seed=0, test_error=5.0, **changes):
    """A digits run whose config is DIGITS with ``changes`` ({"lr": 0.001, "trainer.limit_train_batches": 1})."""
    config = copy.deepcopy(DIGITS)
    config["seed"] = seed
    for dotted, value in changes.items():
        *path, key = dotted.split(".")
        node = config
        for part in path:
            node = node[part]
        node[key] = value
    return write_fake_run(
        root,
        name,
        model="wide_resnet",
        dataset="digits",
        augment="basic",
        epochs=8,
        rho=0.05,
        m=64,
        seed=seed,
        test_error=test_error,
        spec={**SPEC, "precision": "fp32"},
        config=config,
    )


def run_compare(*args):
    return run_main(compare.main, *args)


def csv_rows(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return list(csv.DictReader(io.StringIO(proc.stdout)))


def table_lines(text: str, model: str) -> list[str]:
    return [line for line in text.split("\n## ")[0].splitlines() if line.startswith(f"| {model} |")]


# ---------------------------------------------------------------------------------------- item 1: pooling
def test_runs_that_differ_in_a_setting_are_rows_of_their_own_that_say_how(tmp_path):
    """Issue 22's case: lr 0.05 (two seeds), lr 0.001 and a one-batch smoke run used to be one cell,
    "4 seeds, mean ± huge CI". Operational keys (device, data root, logger) still pool."""
    digits_run(tmp_path, "lr0.05_s0", seed=0, test_error=3.0)
    digits_run(tmp_path, "lr0.05_s1", seed=1, test_error=4.0, device="cuda", **{"dataset.root": "/elsewhere"})
    digits_run(tmp_path, "lr0.001", seed=0, test_error=30.0, lr=0.001)
    digits_run(tmp_path, "smoke", seed=0, test_error=100.0, **{"trainer.limit_train_batches": 1})

    rows = csv_rows(run_compare(tmp_path, "--csv"))
    by_differs = {r["differs"]: r for r in rows}
    assert set(by_differs) == {"", "lr=0.001", "trainer.limit_train_batches=1"}
    usual = by_differs[""]
    assert (usual["n_seeds"], usual["seeds"], float(usual["test_error_mean"])) == ("2", "0 1", 3.5)
    assert float(usual["test_error_ci95"]) == pytest.approx(T975_1 * 0.5, rel=1e-6)
    assert (by_differs["lr=0.001"]["n_seeds"], by_differs["lr=0.001"]["test_error_mean"]) == ("1", "30.0")
    smoke = by_differs["trainer.limit_train_batches=1"]
    assert (smoke["status"], smoke["note"]) == (  # digits has no paper cell; the note says it anyway
        "no_paper_cell",
        "smoke run (limited batches): not comparable",
    )

    text = run_compare(tmp_path).stdout
    lines = table_lines(text, "wide_resnet")
    assert len(lines) == 3
    assert any("| lr=0.001 | 1 | 30.00 ± n/a |" in line for line in lines)
    assert any("| — | 2 | 3.50 ± " in line for line in lines)
    assert any(
        "| trainer.limit_train_batches=1 | 1 | 100.00 ± n/a | smoke run (limited batches)" in x for x in lines
    )


def test_two_rows_that_differ_both_say_their_value(tmp_path):
    digits_run(tmp_path, "a", lr=0.1)
    digits_run(tmp_path, "b", lr=0.001, weight_decay=0.0)
    rows = csv_rows(run_compare(tmp_path, "--csv"))
    assert sorted(r["differs"] for r in rows) == ["lr=0.001, weight_decay=0", "lr=0.1, weight_decay=0.0005"]


def test_sgd_written_as_sam_at_rho_0_pools_with_sgd_and_sam_only_settings_do_not_split_it(tmp_path):
    sgd_spec = {**SPEC, "uses_sam": False, "optimizer": "sgd", "rho": 0.0, "precision": "fp32"}
    for seed, optimizer in enumerate(("sam", "sgd")):
        config = copy.deepcopy(DIGITS)
        config.update(seed=seed, rho=0.0)
        config["optimizer"].update(name=optimizer, adaptive=optimizer == "sam")
        write_fake_run(
            tmp_path, optimizer, model="wide_resnet", dataset="digits", augment="basic", epochs=8,
            optimizer="sgd", rho=0.0, m=64, seed=seed, spec=sgd_spec, config=config,
        )  # fmt: skip
    (row,) = csv_rows(run_compare(tmp_path, "--csv"))
    assert (row["optimizer"], row["n_seeds"], row["differs"]) == ("sgd", "2", "")


def test_a_run_on_another_precision_is_another_row(tmp_path):
    """precision=auto is bf16 on a GPU and fp32 on a CPU: the spec block's resolved precision splits."""
    digits_run(tmp_path, "cpu")
    gpu = digits_run(tmp_path, "gpu", seed=1)
    results = (gpu / "results.json").read_text().replace('"precision": "fp32"', '"precision": "bf16"')
    (gpu / "results.json").write_text(results)
    rows = csv_rows(run_compare(tmp_path, "--csv"))
    assert sorted(r["differs"] for r in rows) == ["spec.precision=bf16", "spec.precision=fp32"]


def test_results_without_a_config_pool_by_the_cell_keys_and_say_so(tmp_path):
    write_fake_run(tmp_path, "old_s0", seed=0, test_error=15.0)  # WRN CIFAR-100 cutout SAM, no config
    write_fake_run(tmp_path, "old_s1", seed=1, test_error=15.2)
    (row,) = csv_rows(run_compare(tmp_path, "--csv"))
    note = "no config recorded: pooled by the cell keys only"
    assert (row["status"], row["n_seeds"], row["differs"], row["note"]) == ("matched", "2", note, note)
    assert float(row["paper_error"]) == 14.9
    line = table_lines(run_compare(tmp_path).stdout, "wrn28_10")[0]
    assert f"| {note} | 2 |" in line


# ------------------------------------------------------------------------------ item 1: the paper, strictly
def recipe(name: str, *overrides: str) -> dict:
    """The config ``python train.py experiment=NAME OVERRIDES`` runs, resolved as results.json records it."""
    assert trainer.spec.TrainConfig  # the schema train.yaml's defaults name is registered
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return OmegaConf.to_container(
            compose("train", overrides=[f"experiment={name}", *overrides]), resolve=True
        )


def recipe_run(root, name, config, test_error, sgd=False):
    spec = {"uses_sam": not sgd, "optimizer": "sgd" if sgd else "sam", "rho": 0.0 if sgd else config["rho"]}
    spec.update(m=config["m"], per_device_batch=config["batch_size"], world_size=8, precision="bf16")
    return write_fake_run(
        root, name, model=config["model"]["name"], dataset=config["dataset"]["name"], augment=config["augment"],
        epochs=config["epochs"], optimizer=spec["optimizer"], rho=spec["rho"], m=config["m"],
        seed=config["seed"], test_error=test_error, spec=spec, config=config,
    )  # fmt: skip


def test_a_run_meets_a_paper_cell_only_with_the_cells_full_settings(tmp_path):
    """Table 1, CIFAR-10, WRN-28-10 200 epochs, basic: SAM 2.7 ± 0.1, SGD 3.5 ± 0.1 (the paper's numbers)."""
    cell = "cifar10_wrn28_10_200ep_basic_sam"
    recipe_run(tmp_path, "sam_s0", recipe(cell, "seed=0", "device=cuda", "dataset.root=/scratch"), 2.8)
    recipe_run(tmp_path, "sam_s1", recipe(cell, "seed=1"), 2.6)
    recipe_run(tmp_path, "sam_lr", recipe(cell, "lr=0.01"), 5.0)
    recipe_run(tmp_path, "sam_smoke", recipe(cell, "trainer.limit_val_batches=2"), 50.0)
    recipe_run(tmp_path, "sam_rho", recipe(cell, "rho=0.1"), 2.9)  # Table 1's rho for this cell is 0.05
    # The SGD baseline written as SAM at rho 0: the *_sgd file's computation
    recipe_run(tmp_path, "sgd_as_sam", recipe(cell, "rho=0.0"), 3.4, sgd=True)

    rows = csv_rows(run_compare(tmp_path, "--csv", "--tables", "table1"))
    sam = {r["differs"]: r for r in rows if r["optimizer"] == "sam" and r["rho"] == "0.05"}
    matched = sam[""]
    assert (matched["status"], matched["n_seeds"], float(matched["paper_error"])) == ("matched", "2", 2.7)
    assert matched["recipe"] == cell and float(matched["diff_test_error"]) == pytest.approx(0.0, abs=1e-12)

    other_lr = sam["lr=0.01"]
    assert (other_lr["status"], other_lr["paper_error"], other_lr["paper_table"]) == (
        "not_comparable",
        "",
        "",
    )
    assert other_lr["note"] == f"not the paper's recipe (experiment={cell}): lr=0.01 (recipe: 0.1)"
    smoke = sam["trainer.limit_val_batches=2"]
    assert (smoke["status"], smoke["paper_error"]) == ("not_comparable", "")
    assert smoke["note"] == "smoke run (limited batches): not comparable"
    (other_rho,) = [r for r in rows if r["rho"] == "0.1"]
    assert other_rho["status"] == "not_comparable" and "rho=0.1 (recipe: 0.05)" in other_rho["note"]

    (sgd,) = [r for r in rows if r["optimizer"] == "sgd"]
    assert (sgd["status"], float(sgd["paper_error"]), sgd["recipe"]) == (
        "matched",
        3.5,
        "cifar10_wrn28_10_200ep_basic_sgd",
    )

    text = run_compare(tmp_path, "--tables", "table1").stdout
    line = next(x for x in table_lines(text, "wrn28_10") if "| lr=0.01 |" in x)
    assert f"| 5.00 ± n/a | not the paper's recipe (experiment={cell}): lr=0.01 (recipe: 0.1) | — |" in line


def test_best_of_n_and_2n_pairs_only_halves_that_differ_in_epochs_alone(tmp_path):
    """Table 1's SGD statistic (best of N and 2N epochs): a 2N run with another lr is not the N run's half."""
    n = "cifar10_wrn28_10_200ep_basic_sgd"
    recipe_run(tmp_path, "n", recipe(n), 3.6, sgd=True)
    recipe_run(tmp_path, "2n_lr", recipe(n, "epochs=400", "lr=0.01"), 3.0, sgd=True)
    rows = csv_rows(run_compare(tmp_path, "--csv", "--tables", "table1"))
    assert not [r for r in rows if r["status"] == "best_of_n_and_2n"]

    recipe_run(tmp_path, "2n", recipe(f"{n}_2n"), 3.4, sgd=True)
    rows = csv_rows(run_compare(tmp_path, "--csv", "--tables", "table1"))
    (best,) = [r for r in rows if r["status"] == "best_of_n_and_2n"]
    assert (best["best_of"], best["best_epochs"], float(best["test_error_mean"])) == ("2N", "400", 3.4)


def test_every_comparable_paper_cell_has_experiment_files_by_the_naming_rule():
    """compare finds a cell's recipe by configs/experiment/README.md's file names; only Table 3's
    EfficientNet-L2 cells (no model of ours) have none."""
    without = {
        (c["table"], c["model"]) for c in comparable_cells(load_paper_cells()) if not candidate_names(c)
    }
    assert without == {("table3", "efficientnet_l2_475")}


def test_the_readers_keys_are_the_trainers():
    assert run_reader.OPERATIONAL_KEYS is trainer.spec.OPERATIONAL_KEYS
    assert run_reader.LEGACY_DEFAULTS is trainer.spec.LEGACY_DEFAULTS


# -------------------------------------------------------------------------------- item 2: copied runs
def test_a_copied_run_directory_counts_once_and_the_table_says_so(tmp_path):
    source = digits_run(tmp_path, "run", seed=0, test_error=3.0)
    shutil.copytree(source, tmp_path / "run_copy")
    digits_run(tmp_path, "run_seed1", seed=1, test_error=4.0)

    (row,) = csv_rows(run_compare(tmp_path, "--csv"))
    assert (row["n_seeds"], row["seeds"], row["n_duplicates"]) == ("2", "0 1", "1")
    assert row["duplicates"] == str(tmp_path / "run_copy")
    assert float(row["test_error_ci95"]) == pytest.approx(T975_1 * 0.5, rel=1e-6)  # 3 and 4, not 3, 3, 4

    (single,) = csv_rows(run_compare(tmp_path / "run_copy", "--csv"))  # sanity: one run alone
    assert single["n_seeds"] == "1"
    shutil.rmtree(tmp_path / "run_seed1")
    line = table_lines(run_compare(tmp_path).stdout, "wide_resnet")[0]
    assert f"| 1 (+1 duplicate: `{tmp_path / 'run_copy'}`) | 3.00 ± n/a |" in line  # not "2 | 3.00 ± 0.00"


# ----------------------------------------------------------------------- issue 23 item 7: missing cells
def test_paper_cells_without_runs_are_listed_only_with_missing(tmp_path):
    write_fake_run(tmp_path, "sam", seed=0, test_error=15.0)  # one Table 1 cell
    proc = run_compare(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "## Paper cells without runs" not in proc.stdout
    assert "145 paper cells without runs are not listed: add --missing to list them" in proc.stdout
    assert proc.stdout.index("| wrn28_10 | cifar100 | cutout |") < proc.stdout.index("145 paper cells")

    listed = run_compare(tmp_path, "--missing").stdout
    assert "## Paper cells without runs (145)" in listed and "not listed" not in listed
    assert listed.index("| wrn28_10 | cifar100 | cutout |") < listed.index("## Paper cells without runs")

    proc = run_compare(tmp_path, "--csv")
    assert {r["status"] for r in csv_rows(proc)} == {"matched"}
    assert "145 paper cells without runs are not listed: add --missing" in proc.stderr
    assert sum(r["status"] == "missing" for r in csv_rows(run_compare(tmp_path, "--csv", "--missing"))) == 145
    from sam.variants import WITHOUT_RHO

    assert set(run_reader.RHO_FREE) == WITHOUT_RHO  # the built-in variants that record rho 0
