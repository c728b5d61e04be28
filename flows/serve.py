"""Serve the `full-pipeline/local` deployment (a long-running process; Ctrl-C to stop).

    python -m flows.serve                  # then: prefect deployment run full-pipeline/local
"""

from __future__ import annotations

DEPLOYMENT = "local"


def main() -> None:
    from flows.full_pipeline import full_pipeline

    full_pipeline.serve(name=DEPLOYMENT, description="All DVC stages in order, unchanged ones skipped; "
                        "MLflow parent run with a child per stage; pushes to the DVC remote.")


if __name__ == "__main__":
    main()
