#!/usr/bin/env bash
# `make demo`: the story of the seed chapter in five steps, on a small real network.
#   1. train with periodic async checkpoints and get SIGKILLed in the middle of a save
#   2. restart with --resume auto: the torn checkpoint is ignored, training continues
#   3. an uninterrupted run of the same seed ends bit-identical (model, EMA, optimizer, sampler)
#   4. the EMA weights load strictly into a fresh model, which then samples
#   5. a summary: losses, checkpoint sizes, save blocking times, the resume point, where to look
# Progress bars on a terminal, plain lines otherwise. Knobs: DEMO_DIR, DEMO_STEPS, DEMO_CKPT_EVERY.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CKPTIO_BIN_DIR:-build/bin}
work=${DEMO_DIR:-build/demo}
steps=${DEMO_STEPS:-160}
every=${DEMO_CKPT_EVERY:-20}
kill_at=$(( (steps * 3 / 4) / every * every ))  # a save step about three quarters in
[ "$kill_at" -ge "$every" ] || kill_at=$every
common=(--steps "$steps" --ckpt-every "$every" --keep 3 --seed 42)

if [ -t 1 ]; then bold=$'\033[1m'; green=$'\033[32m'; red=$'\033[31m'; off=$'\033[0m'
else bold=""; green=""; red=""; off=""; fi
say() { printf '\n%s%s%s\n' "$bold" "$*" "$off"; }
started=$(date +%s)

[ -x "$bin/train-demo" ] || { echo "demo: $bin/train-demo is missing (build with CKPTIO_WITH_TORCH=ON)" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work"
run="$work/run"
reference="$work/reference"

say "1/5  Train with async checkpoints every $every steps; the process is killed during the save of step $kill_at"
status=0
"$bin/train-demo" --out "$run" "${common[@]}" --async --snapshot copy --kill-at-step "$kill_at" \
  --log "$work/run.log" || status=$?
if [ "$status" -ne 137 ]; then
  echo "${red}demo: expected the run to be killed (exit 137), got $status${off}" >&2
  exit 1
fi
echo "  killed by SIGKILL (exit $status). What is on disk:"
for d in "$run"/* "$run"/.*; do
  name=$(basename "$d")
  case "$name" in .|..) continue ;; esac
  [ -d "$d" ] || continue
  if [ -f "$d/ckptio.manifest.json" ] && [[ "$name" != .* ]]; then
    echo "    $name  committed"
  else
    echo "    $name  torn: no manifest, never taken for a checkpoint"
  fi
done

say "2/5  Restart with --resume auto"
"$bin/train-demo" --out "$run" "${common[@]}" --async --snapshot copy --resume auto \
  --log "$work/run.log" | tee "$work/resume.out"
final_run=$(sed -n 's/^final checkpoint: //p' "$work/resume.out")

say "3/5  The same seed without interruption (synchronous saves), compared bit for bit"
"$bin/train-demo" --out "$reference" "${common[@]}" --log "$work/reference.log" \
  | tee "$work/reference.out"
final_reference=$(sed -n 's/^final checkpoint: //p' "$work/reference.out")
if "$bin/train-demo" --compare "$final_run" "$final_reference" > "$work/compare.out"; then
  sed 's/^/  /' "$work/compare.out" | grep -v RESULT
  echo "  ${green}interrupted+resumed == uninterrupted: model, EMA, optimizer and sampler are bit-identical${off}"
else
  sed 's/^/  /' "$work/compare.out"
  echo "  ${red}the resumed run differs from the uninterrupted one${off}" >&2
  exit 1
fi

say "4/5  Load the EMA weights with load_checkpoint (strict) into a fresh model and sample"
"$bin/train-demo" --infer "$final_run" --seed 42 | grep -v '^infer '

say "5/5  Summary"
loss_at() {  # the last logged loss at a step (the resumed run re-logs steps it repeats)
  awk -v s="$2" '$1=="loss" && $2=="step="s {split($3,v,"="); x=v[2]} END {print (x=="" ? "-" : x)}' "$1"
}
printf '  %-8s %-14s %-14s\n' step "loss (resumed)" "loss (reference)"
for s in $(awk '$1=="loss" {split($2,v,"="); print v[2]}' "$work/reference.log" | sort -n | uniq); do
  if [ "$s" = 1 ] || [ $((s % (steps / 5))) -eq 0 ]; then
    printf '  %-8s %-14s %-14s\n' "$s" "$(loss_at "$work/run.log" "$s")" "$(loss_at "$work/reference.log" "$s")"
  fi
done
echo
echo "  checkpoints kept (--keep 3):"
for d in "$run"/epoch*; do
  [ -d "$d" ] && printf '    %-28s %s\n' "$(basename "$d")" "$(du -sh "$d" | cut -f1)"
done
avg() { awk -v m="$2" '$1=="checkpoint" && $3=="mode="m {split($4,v,"="); t+=v[2]; n++}
        END {if (n) printf "%.1f ms (%d saves)", t/n, n; else print "-"}' "$1"; }
max() { awk -v m="$2" '$1=="checkpoint" && $3=="mode="m {split($4,v,"="); if (v[2]>x) x=v[2]}
        END {printf "%.1f ms", x}' "$1"; }
echo
echo "  time the training loop was blocked by save():"
echo "    async copy (snapshot into the staging pool): mean $(avg "$work/run.log" async-copy), max $(max "$work/run.log" async-copy)"
echo "    synchronous save (write + fsync + commit):    mean $(avg "$work/reference.log" sync), max $(max "$work/reference.log" sync)"
resumed=$(sed -n 's/^resumed path=\([^ ]*\) .*/\1/p' "$work/run.log" | tail -1)
echo
echo "  resume point: $(basename "$resumed") (the save of step $kill_at was torn by the kill and ignored)"
echo "  final checkpoint: $final_run"
echo
echo "  look at the files:"
echo "    $bin/ckptio ls $run"
echo "    $bin/ckptio inspect $final_run/model"
echo "    $bin/ckptio verify --full $final_run"
echo
echo "  the whole story took $(( $(date +%s) - started )) s"

# The same story in Python with ckptio.torch.CheckpointIO (examples/python/train.py), when the
# Python package is built (it is by `make release` when the .venv has nanobind).
if [ -x .venv/bin/python ] && compgen -G "build/release/python/ckptio/_core*.so" >/dev/null; then
  say "Python: the same story with ckptio.torch.CheckpointIO (examples/python/train.py)"
  PYTHONPATH=build/release/python .venv/bin/python examples/python/train.py --workdir "$work/python" \
    | grep -v '^  step '
else
  echo
  echo "  (the Python example needs .venv and build/release/python: make deps release)"
fi
