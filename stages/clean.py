"""Stage clean: raw sources -> data/clean/{train,validation,test,quarantine}.jsonl."""

from chatsft.data.clean import clean_records, write_clean
from chatsft.data.ids import EXCLUDE_FILE, read_exclusions
from chatsft.data.mixing import format_mixture
from chatsft.data.report import format_report
from chatsft.errors import user_errors_exit
from chatsft.io import atomic_path, write_json
from chatsft.stage import start_stage

OUT_DIR = "data/clean"
REPORT = "metrics/clean.json"


@user_errors_exit
def main() -> None:
    params = start_stage(["data"], [OUT_DIR, REPORT]).data
    result = clean_records(params, excluded=frozenset(read_exclusions(EXCLUDE_FILE)))
    report = result.report()
    with atomic_path(OUT_DIR, is_dir=True) as tmp:
        write_clean(result, tmp)
    write_json(REPORT, report)
    print(format_report(report, result.quarantine))
    for line in format_mixture(report["mixture"]):
        print(line)
    if report["quarantined"]:
        print(f"rejected records, verbatim with file, line and reason: {OUT_DIR}/quarantine.jsonl")


if __name__ == "__main__":
    main()
