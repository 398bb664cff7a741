"""The prepare_data stage: candidate pool and target sets for the configured profile.

Outputs (under `paths.data_dir`): pool/pool.jsonl, targets/<name>/{indomain,heldout}.jsonl and
prepare_report.json with counts and every skipped record.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from naitbench.cli import reported_errors
from naitbench.config import CONF_DIR, validate
from naitbench.data.pool import build_pool
from naitbench.data.records import BadRecordLog
from naitbench.data.targets import build_target
from naitbench.data.template import PromptFormat
from naitbench.io import write_json, write_jsonl
from naitbench.models.load import load_tokenizer


def prepare(cfg: DictConfig) -> dict:
    """Build and write the pool and every prepared target; return the report."""
    validate(cfg)
    data_dir = Path(cfg.paths.data_dir)
    on_bad, max_chars = cfg.data.on_bad_record, cfg.data.max_chars
    log = BadRecordLog()
    tokenizer = load_tokenizer(cfg.model.dir)
    pool, pool_counts = build_pool(cfg.pool, tokenizer, on_bad=on_bad, log=log,
                                   max_chars=max_chars)
    write_jsonl(data_dir / "pool" / "pool.jsonl", pool)
    report = {"pool": pool_counts, "targets": {}}
    template = PromptFormat(cfg.pool.template, tokenizer)
    for name in cfg.data.prepared_targets:
        indomain, heldout, counts = build_target(name, cfg.targets[name], template,
                                                 on_bad=on_bad, log=log, max_chars=max_chars)
        write_jsonl(data_dir / "targets" / name / "indomain.jsonl", indomain)
        write_jsonl(data_dir / "targets" / name / "heldout.jsonl", heldout)
        report["targets"][name] = counts
    report["bad_records"] = log.summary()
    write_json(data_dir / "prepare_report.json", report)
    return report


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    with reported_errors():
        report = prepare(cfg)
        targets = ", ".join(f"{k}: {v['indomain']} in-domain / {v['heldout']} held-out"
                            for k, v in report["targets"].items())
        pool, bad = report["pool"], report["bad_records"]
        length = pool["length_policy"]
        for cut in bad["cut_off"]:
            print(f"{cut['file']} is cut off at line {cut['line']}: read up to there, "
                  f"{cut['records_recovered']} whole records recovered")
        print(f"pool: {pool['kept']} records ({pool['duplicates_removed']} duplicates removed; "
              f"length policy '{length['policy']}' at {length['max_length']} tokens: "
              f"{length['dropped']} dropped, {length['prompt_cut']} prompts cut); {targets}; "
              f"skipped bad records: {bad['skipped']}")


if __name__ == "__main__":
    main()
