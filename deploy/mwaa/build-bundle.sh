#!/usr/bin/env bash
# Build what an MWAA environment is given, from a checkout of this repo:
#
#   deploy/mwaa/build-bundle.sh OUT        (default OUT: build/mwaa)
#
#   OUT/plugins.zip       mlbatch/, mlbatch_plugin.py and jobs/{__init__,contract,cpus}.py at the
#                         zip's root: MWAA extracts it into /usr/local/airflow/plugins, which is on
#                         sys.path, so `import mlbatch` and mlbatch.spec's `import jobs.contract` work
#   OUT/requirements.txt  requirements/airflow.txt without the apache-airflow* lines (MWAA provides
#                         Airflow and its providers)
#   OUT/dags/             the DAG files, dags/specs/ and sql/ as dags/sql/ (a spec's SQL paths
#                         resolve against MLBATCH_PROJECT_DIR=/usr/local/airflow/dags)
#   OUT/startup.sh        deploy/mwaa/startup.sh (edit its values before uploading)
#
# Upload: plugins.zip, requirements.txt and startup.sh to the environment's bucket (set their S3
# object versions on the environment), dags/ to its DAGs folder. Checked by
# tests/integration/deploy/test_mwaa_bundle.py, which runs this script and imports every DAG from
# OUT alone in a fresh interpreter.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$repo/build/mwaa}"
rm -rf "$out"
mkdir -p "$out/dags"
stage="$(mktemp -d "${TMPDIR:-/tmp}/mlbatch-mwaa.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# plugins.zip: the package, the Airflow plugin (the Report link), and the standard-library job
# modules mlbatch imports (the contract: metric and family names; cpus: the local launcher's share).
rsync -a --exclude __pycache__ --exclude '*.pyc' "$repo/plugins/mlbatch" "$repo/plugins/mlbatch_plugin.py" \
    "$repo/plugins/.airflowignore" "$stage/"
mkdir -p "$stage/jobs"
cp "$repo/jobs/__init__.py" "$repo/jobs/contract.py" "$repo/jobs/cpus.py" "$stage/jobs/"
(cd "$stage" && zip -qrX "$out/plugins.zip" mlbatch mlbatch_plugin.py jobs .airflowignore)

# requirements.txt: what the Airflow image installs, less what MWAA itself provides.
grep -vE '^apache-airflow(-|==)' "$repo/requirements/airflow.txt" > "$out/requirements.txt"

rsync -a --exclude __pycache__ "$repo/dags/" "$out/dags/"
rsync -a "$repo/sql/" "$out/dags/sql/"
# The DAG processor parses dags/**/*.py; nothing under sql/ or specs/ is a DAG.
printf 'sql/\nspecs/\n' > "$out/dags/.airflowignore"
cp "$repo/deploy/mwaa/startup.sh" "$out/startup.sh"
echo "mwaa bundle: $out (plugins.zip, requirements.txt, startup.sh, dags/)"
