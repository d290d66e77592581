"""RAICL data side on a synthetic cohort: prepare and feature throughput, classical baselines (LOPO).

Prints markdown tables. The cohort is synthetic (omnipress.eeg.synth): these are pipeline numbers, not a measure of
clinical performance.

Run:  python benchmarks/eeg_data.py                 (20 patients x 10 min, about 2 minutes on 2 cores)
      python benchmarks/eeg_data.py --patients 8 --minutes 3   (quick)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from omnipress.eeg.baselines import leave_one_patient_out
    from omnipress.eeg.features import signal_features
    from omnipress.eeg.prepare import prepare
    from omnipress.eeg.synth import write_cohort

    root = Path(tempfile.mkdtemp(prefix="omnipress-eeg-"))
    start = time.perf_counter()
    files = write_cohort(root / "edf", patients=args.patients, seed=0, minutes_per_patient=args.minutes)
    synth_s = time.perf_counter() - start
    prepare_rates, feature_rates = [], []
    for _ in range(args.repeats):
        result = prepare(root / "edf", root / "windows", progress=False)
        prepare_rates.append(result.windows_per_second)
        ws = result.windows
        start = time.perf_counter()
        features = signal_features(ws.data, ws.sfreq)
        feature_rates.append(len(ws) / (time.perf_counter() - start))

    print(
        f"## Data ({args.patients} patients x {args.minutes:g} min, {len(files)} EDF+ files, {len(ws)} windows, "
        f"{int(ws.label.sum())} seizure windows; median of {args.repeats} runs)\n"
    )
    print("| stage | windows/s |\n|---|---|")
    print(f"| synth (write EDF+) | {len(ws) / synth_s:.0f} |")
    print(f"| prepare (read, montage, filter, resample, window) | {statistics.median(prepare_rates):.0f} |")
    print(f"| signal features | {statistics.median(feature_rates):.0f} |\n")

    print("## Classical baselines, leave-one-patient-out\n")
    print("| model | normalisation | macro balanced acc. (per patient) | pooled balanced acc. | worst patient | s |")
    print("|---|---|---|---|---|---|")
    for model in ("logreg", "gboost"):
        for normalize in ("none", "patient"):
            start = time.perf_counter()
            res = leave_one_patient_out(ws, model, features=features, normalize=normalize)
            seconds = time.perf_counter() - start
            worst = min(res.per_patient_bca().values())
            print(
                f"| {model} | {normalize} | {res.macro_bca:.3f} | {res.pooled_bca:.3f} | {worst:.3f} | {seconds:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
