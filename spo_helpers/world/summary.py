"""The one-screen description of a built world: its data, tokenizer, model, measured spread and build time.

A TIR world adds its tool use by difficulty, or says that its check (``spo world --tools``) has not run yet.
"""

from __future__ import annotations

from typing import Any

from spo_helpers.world.paths import WorldPaths, read_manifest


def summary(paths: WorldPaths) -> str:
    """A one-screen description of a built world."""
    m = read_manifest(paths) or {}
    if m.get("tools"):
        return _tool_summary(paths, m)
    s, v, tok, mod = m.get("spread", {}), m.get("val_accuracy", {}), m.get("tokenizer", {}), m.get("model", {})
    lines = [
        f"world    {paths.root}",
        f"data     {m.get('num_train')} train / {m.get('num_val')} val prompts   {paths.train_file.parent}",
        f"         difficulty mix (train) {m.get('task', {}).get('difficulty_train')}",
        f"model    {paths.model_dir}   (MODEL_PATH: tokenizer + Qwen3, {mod.get('parameters', 0):,} params)",
        f"tokens   vocab {tok.get('vocab_size')}, prompt <= {tok.get('max_prompt_tokens')}, "
        f"response <= {tok.get('max_response_tokens')}",
        f"spread   {s.get('prompts')} train prompts x {s.get('n')} samples at T=1: mean success "
        f"{s.get('mean_success', float('nan')):.3f}, all-fail {s.get('share_all_fail', float('nan')):.2f}, "
        f"mixed {s.get('share_mixed', float('nan')):.2f}, all-pass {s.get('share_all_pass', float('nan')):.2f}",
        f"         by difficulty {s.get('mean_by_difficulty')}",
        f"val      accuracy at T={v.get('temperature')}: {v.get('mean_success', float('nan')):.3f}",
        f"time     {m.get('build_seconds')}s (warm start {m.get('warm_start_seconds')}s)",
    ]
    return "\n".join(lines)


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _by_level(values: dict[str, Any] | None) -> str:
    return " ".join(f"{k}:{_rate(v)}" for k, v in (values or {}).items()) or "-"


def _tool_summary(paths: WorldPaths, m: dict[str, Any]) -> str:
    """The one-screen description of a TIR world: the plain lines plus tool use by difficulty."""
    s, v, tok, mod = m.get("spread") or {}, m.get("val_accuracy") or {}, m.get("tokenizer", {}), m.get("model", {})
    marks = tok.get("tool_marker_tokens", {})
    lines = [
        f"world    {paths.root}   (with tools: {m.get('tool_share', 0):.0%} of warm-start targets are tool traces)",
        f"data     {m.get('num_train')} train / {m.get('num_val')} val prompts   {paths.train_file.parent}",
        f"model    {paths.model_dir}   (MODEL_PATH: tokenizer + Qwen3, {mod.get('parameters', 0):,} params)",
        f"tokens   vocab {tok.get('vocab_size')}, prompt <= {tok.get('max_prompt_tokens')}, tool trace <= "
        f"{tok.get('max_response_tokens')}, response budget {m.get('tool_response_length')}; markers {marks}",
    ]
    if not s:
        lines.append("spread   not measured yet: spo world --tools runs it through the agent loop and the sandbox")
    else:
        lines += [
            f"spread   {s.get('prompts')} train prompts x {s.get('n')} samples at T=1 with tools: mean success "
            f"{s.get('mean_success', float('nan')):.3f}, all-fail {s.get('share_all_fail', float('nan')):.2f}, "
            f"mixed {s.get('share_mixed', float('nan')):.2f}, all-pass {s.get('share_all_pass', float('nan')):.2f}",
            f"         by difficulty         {_by_level(s.get('mean_by_difficulty'))}",
            f"tools    call rate {_rate(s.get('tool_call_rate'))}, success with a call "
            f"{_rate(s.get('success_with_tool'))}, without {_rate(s.get('success_without_tool'))}; "
            f"longest response {s.get('max_response_tokens')} tokens, {s.get('share_out_of_budget', 0):.1%} "
            "out of budget",
            f"         call rate             {_by_level(s.get('tool_call_rate_by_difficulty'))}",
            f"         success with a call   {_by_level(s.get('success_with_tool_by_difficulty'))}",
            f"         success without       {_by_level(s.get('success_without_tool_by_difficulty'))}",
        ]
    if v:
        lines.append(
            f"val      accuracy at T={v.get('temperature')} with tools: {v.get('mean_success', float('nan')):.3f}, "
            f"call rate {_rate(v.get('tool_call_rate'))}"
        )
    check = f", tool check {m['tool_check_seconds']}s" if "tool_check_seconds" in m else ""
    lines.append(f"time     {m.get('build_seconds')}s (warm start {m.get('warm_start_seconds')}s){check}")
    return "\n".join(lines)


__all__ = ["summary"]
