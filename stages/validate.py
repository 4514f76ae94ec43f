"""Stage validate: the pipeline's first stage, run at every `dvc repro` (always_changed).

It validates the whole params.yaml before any other stage runs, so a bad key (a typo in
`dvc exp run -S ...`) stops the pipeline before DVC removes any stage's outputs; and it
writes the list of files data.raw names, with their hashes, which the clean stage depends
on: DVC cannot take a list from params as dependencies, so clean reruns when the user's data
files change through this file.
"""

from chatsft.data.sources import fingerprint
from chatsft.errors import user_errors_exit
from chatsft.io import write_json
from chatsft.params import Params
from chatsft.stage import start_stage

SOURCES = "data/sources.json"


@user_errors_exit
def main() -> None:
    params = start_stage(Params.model_fields, [SOURCES])
    files = fingerprint([s.path for s in params.data.sources()])
    write_json(SOURCES, files)
    print(f"validate: params.yaml is valid; data.raw names {len(files)} files ({SOURCES})")


if __name__ == "__main__":
    main()
