"""A self-contained HTML viewer that replays masked-diffusion decoding, one sample at a time.

    python -m dllm_rl.viz.viewer outputs/eval/eval_tiny/<time>/samples.jsonl --out traj.html
    python -m dllm_rl.viz.viewer outputs/cj_grpo_tiny/<run>/samples.jsonl --tokenizer tiny

    from dllm_rl.viz.viewer import samples_from_trajectory, write_viewer
    write_viewer(samples_from_trajectory(traj, model.tokenizer, prompts), "traj.html")

Per sample: the prompt, the final completion, a slider and step buttons that replay the decoding
(masked positions as placeholders, the tokens committed at the current step highlighted,
optionally coloured by their commit log-probability), and a commit-order heat map (position
against step). The page has no network access, scripts or fonts from elsewhere; model output
is hostile, so every text reaches the page as JSON (``<``, ``>``, ``&`` escaped) and is put into
the DOM with ``textContent`` only, never parsed as HTML. Samples render lazily when they scroll
into view (or are opened), so 100 samples at L = 512 load in well under a second.

The page's URL fragment sets the state: ``#sample=3&step=5`` opens sample 3 at step 5;
``#open=all`` opens (builds) every sample; ``#selftest`` steps sample 0 through every step with its buttons and writes what was shown into
``<pre id="selftest">`` (what the headless-browser test reads).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MASK_GLYPH = "·"


@dataclass
class SampleView:
    """One trajectory as the viewer shows it (L completion positions).

    Attributes:
        tokens: ``[L]`` text of each completion token (decoded alone).
        unmask_step: ``[L]`` step at which each token was committed (0..S-1).
        num_steps: S.
        prompt, completion: texts.
        logprobs: ``[L]`` commit log-probs, or None.
        special: ``[L]`` bools, True on special tokens (EOS, EOT, pad), or None.
        title: a short label ("#3 reward 1.0").
        info: extra key -> value lines (rewards, answer, schedule).
    """

    tokens: list[str]
    unmask_step: list[int]
    num_steps: int
    prompt: str = ""
    completion: str = ""
    logprobs: list[float] | None = None
    special: list[bool] | None = None
    title: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.unmask_step):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.unmask_step)} unmask steps")
        if self.logprobs is not None and len(self.logprobs) != len(self.tokens):
            raise ValueError(f"{len(self.logprobs)} log-probs for {len(self.tokens)} tokens")


# ----------------------------------------------------------------------------- token texts
def visible(text: str) -> str:
    """Whitespace a reader can see: newline -> ⏎ (then a line break), tab -> ⇥."""
    return text.replace("\t", "⇥").replace("\n", "⏎\n")


def token_texts(ids: Sequence[int], tokenizer: Any | None) -> tuple[list[str], list[bool]]:
    """Each id decoded alone; ids the tokenizer cannot decode become ``⟨id⟩``.

    Returns:
        ``[L]`` texts and ``[L]`` special-token flags.
    """
    if tokenizer is None:
        return [f"⟨{i}⟩" for i in ids], [False] * len(ids)
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    size = len(tokenizer)
    texts, special = [], []
    for i in ids:
        if not 0 <= int(i) < size:
            texts.append(f"⟨{i}⟩")
            special.append(False)
            continue
        text = tokenizer.decode([int(i)])
        texts.append(text if text else f"⟨{i}⟩")
        special.append(int(i) in special_ids)
    return texts, special


def _special_flags(tokens: Sequence[str]) -> list[bool]:
    return [t.startswith("<|") and t.endswith("|>") for t in tokens]


# ----------------------------------------------------------------------------- inputs
def sample_from_row(row: dict[str, Any], tokenizer: Any | None = None, n: int = 0) -> SampleView:
    """An eval or training ``samples.jsonl`` row -> :class:`SampleView`."""
    ids = row.get("completion_ids")
    steps = row.get("unmask_step")
    if ids is None or steps is None:
        raise ValueError(
            f"row {n}: no completion_ids/unmask_step; the viewer needs samples.jsonl rows "
            "written by dllm_rl.eval or a trainer"
        )
    if row.get("tokens") is not None and tokenizer is None:
        tokens, special = list(row["tokens"]), _special_flags(row["tokens"])
    else:
        tokens, special = token_texts(ids, tokenizer)
    num_steps = int(row.get("num_steps") or (max(steps) + 1 if steps else 0))
    reward = row.get("reward")
    label = f"#{row.get('index', n)}"
    if "step" in row:
        label = f"step {row['step']} {label}"
    if reward is not None:
        label += f"  reward {reward:.3g}"
    info: dict[str, Any] = {}
    for key in ("rewards", "correct", "length"):
        if key in row:
            info[key] = row[key]
    for key, value in (row.get("columns") or {}).items():
        info[key] = value
    return SampleView(
        tokens=tokens,
        unmask_step=[int(s) for s in steps],
        num_steps=num_steps,
        prompt=str(row.get("prompt", "")),
        completion=str(row.get("completion", "")),
        logprobs=row.get("step_logprobs"),
        special=special,
        title=label,
        info=info,
    )


def samples_from_jsonl(
    paths: Sequence[str | Path], tokenizer: Any | None = None, limit: int | None = None
) -> list[SampleView]:
    """Rows of eval or training ``samples.jsonl`` files (in order, up to ``limit``)."""
    out: list[SampleView] = []
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f):
                if not line.strip():
                    continue
                out.append(sample_from_row(json.loads(line), tokenizer, n))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def samples_from_trajectory(
    trajectory: Any,
    tokenizer: Any,
    prompts: Sequence[str] | None = None,
    completions: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
) -> list[SampleView]:
    """The rows of a :class:`~dllm_rl.rollout.trajectory.Trajectory` (Python API)."""
    ids = trajectory.completion_ids.cpu().tolist()
    steps = trajectory.unmask_step.cpu().tolist()
    logps = trajectory.step_logprobs
    logps = None if logps is None else logps.cpu().tolist()
    out = []
    for b in range(len(ids)):
        tokens, special = token_texts(ids[b], tokenizer)
        prompt = "" if prompts is None else prompts[b]
        if prompts is None and tokenizer is not None:
            real = trajectory.prompt_ids[b][trajectory.prompt_mask[b].bool()].tolist()
            prompt = tokenizer.decode(real, skip_special_tokens=True)
        done = (
            completions[b]
            if completions is not None
            else "".join(t for t, s in zip(tokens, special) if not s)
        )
        out.append(
            SampleView(
                tokens=tokens,
                unmask_step=steps[b],
                num_steps=trajectory.num_steps,
                prompt=prompt,
                completion=done,
                logprobs=None if logps is None else logps[b],
                special=special,
                title=titles[b] if titles is not None else f"#{b}",
                info={"schedule": trajectory.schedule.kind},
            )
        )
    return out


# ----------------------------------------------------------------------------- the page
def _payload(samples: Sequence[SampleView]) -> dict[str, Any]:
    """Compact JSON: token texts de-duplicated into one table, log-probs to 2 decimals."""
    table: dict[str, int] = {}
    rows = []
    for s in samples:
        idx = [table.setdefault(visible(t), len(table)) for t in s.tokens]
        special = s.special or [False] * len(s.tokens)
        rows.append(
            {
                "title": s.title,
                "prompt": s.prompt,
                "completion": s.completion,
                "t": idx,
                "u": s.unmask_step,
                "S": s.num_steps,
                "lp": None if s.logprobs is None else [round(float(x), 2) for x in s.logprobs],
                "sp": [i for i, flag in enumerate(special) if flag],
                "info": s.info,
            }
        )
    return {"vocab": list(table), "samples": rows, "mask": MASK_GLYPH}


def _json_for_script(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``</script>``, ``<!--`` or ``&`` can survive."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def viewer_html(samples: Sequence[SampleView], title: str = "dllm-rl trajectories") -> str:
    """The whole page as one string."""
    if not samples:
        raise ValueError("no samples to show")
    return (
        _PAGE.replace("%TITLE%", html.escape(title))
        .replace("%CSS%", _CSS)
        .replace("%JS%", _JS)
        .replace("%DATA%", _json_for_script(_payload(samples)))
    )


def write_viewer(
    samples: Sequence[SampleView], path: str | Path, title: str = "dllm-rl trajectories"
) -> Path:
    """Write :func:`viewer_html` to ``path``; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(viewer_html(samples, title), encoding="utf-8")
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title><style>%CSS%</style></head>
<body>
<header><h1>%TITLE%</h1>
<div class="legend">
<span class="tok mask">·</span> masked
<span class="tok now">tok</span> committed at this step
<span class="tok">tok</span> committed earlier
<span class="tok special">EOS</span> special token
<span class="tok">⟨123⟩</span> id the tokenizer cannot decode
<label><input type="checkbox" id="colour"> colour by commit probability</label>
<button type="button" id="openall">open all</button> <button type="button" id="closeall">close all</button>
<span class="scale"><span style="background:hsl(0,70%,80%)">p=0</span><span style="background:hsl(60,70%,80%)">0.5</span><span style="background:hsl(120,70%,80%)">1</span></span>
</div>
<div class="help">Keys on an open sample: ← / → step, Home / End. Heat map: x = position,
y = step (top = first); a cell is filled where the position was committed at that step, coloured
by its commit probability when the samples recorded log-probs (dark grey otherwise).</div>
</header>
<main id="list"></main>
<pre id="selftest" hidden></pre>
<script type="application/json" id="data">%DATA%</script>
<script>%JS%</script>
</body></html>
"""

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#fafafa;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:6px 14px;z-index:2}
h1{font-size:16px;margin:2px 0}
.legend,.help{font-size:12px;color:#555}.legend .tok{margin:0 2px 0 10px}
.scale span{padding:0 4px}
details.sample{background:#fff;border:1px solid #ddd;border-radius:4px;margin:8px 14px;padding:4px 10px}
summary{cursor:pointer;font-weight:600}
summary .snip{font-weight:400;color:#666;margin-left:8px}
.ok{color:#0a7}.bad{color:#c33}
.label{font-size:12px;color:#777;margin-top:6px}
.text{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;
 background:#f4f4f4;padding:4px 6px;border-radius:3px;max-height:12em;overflow:auto;
 overflow-wrap:anywhere}
.canvas{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;
 line-height:1.7;padding:4px 0;word-break:break-all}
.tok{border-radius:2px;padding:0 1px}
.tok.mask{color:#999;background:#eee}
.tok.now{background:#ffd54f;outline:1px solid #e0a800}
.tok.special{font-size:10px;color:#777;border:1px solid #ccc}
.controls{display:flex;gap:6px;align-items:center;margin:6px 0}
.controls input[type=range]{flex:1}
.heat{image-rendering:pixelated;border:1px solid #ccc;width:100%;max-width:768px;height:auto}
.info{font-size:12px;color:#444}
"""

_JS = r"""
(function(){
"use strict";
const T0 = performance.now();
const DATA = JSON.parse(document.getElementById("data").textContent);
const V = DATA.vocab, MASK = DATA.mask;
const list = document.getElementById("list");
const colour = document.getElementById("colour");
const views = [];
function el(tag, cls, text){const e=document.createElement(tag); if(cls) e.className=cls;
  if(text!==undefined) e.textContent=text; return e;}
function probColour(lp){const p=Math.exp(lp); return "hsl("+Math.round(120*p)+",70%,80%)";}

function View(i, s){
  this.i=i; this.s=s; this.step=s.S; this.built=false;
  const d=el("details","sample"); d.id="sample-"+i; d.dataset.index=i;
  const sum=el("summary",null,s.title);
  if(s.info && s.info.correct!==undefined){
    sum.appendChild(el("span", s.info.correct?"ok":"bad", s.info.correct?"  ✓":"  ✗"));}
  sum.appendChild(el("span","snip",s.prompt.slice(0,90)));
  d.appendChild(sum); this.root=d;
  d.addEventListener("toggle",()=>{ if(d.open) this.build(); });
}
View.prototype.build=function(){
  if(this.built) return; this.built=true;
  const s=this.s, d=this.root, L=s.t.length;
  d.appendChild(el("div","label","prompt"));
  d.appendChild(el("div","text",s.prompt));
  d.appendChild(el("div","label","final completion"));
  d.appendChild(el("div","text",s.completion));
  const c=el("div","controls");
  const mk=(t,f)=>{const b=el("button",null,t); b.type="button"; b.addEventListener("click",f); c.appendChild(b); return b;};
  this.first=mk("|◀",()=>this.go(0)); this.prev=mk("◀ step",()=>this.go(this.step-1));
  this.next=mk("step ▶",()=>this.go(this.step+1)); this.last=mk("▶|",()=>this.go(s.S));
  this.range=el("input"); this.range.type="range"; this.range.min=0; this.range.max=s.S;
  this.range.addEventListener("input",()=>this.go(+this.range.value)); c.appendChild(this.range);
  this.readout=el("span","readout"); c.appendChild(this.readout);
  d.appendChild(c);
  d.tabIndex=0;
  d.addEventListener("keydown",(e)=>{
    const k={ArrowRight:this.step+1,ArrowLeft:this.step-1,Home:0,End:s.S}[e.key];
    if(k!==undefined){e.preventDefault(); this.go(k);} });
  const canvas=el("div","canvas"); this.spans=new Array(L);
  const sp=new Set(s.sp);
  for(let j=0;j<L;j++){const t=el("span","tok"); t.dataset.pos=j; t.dataset.step=s.u[j];
    if(sp.has(j)) t.classList.add("special");
    if(s.lp) t.title="pos "+j+" · step "+s.u[j]+" · logp "+s.lp[j];
    else t.title="pos "+j+" · step "+s.u[j];
    canvas.appendChild(t); this.spans[j]=t;}
  d.appendChild(canvas); this.canvas=canvas;
  d.appendChild(el("div","label","commit order (x: position 0.."+(L-1)+", y: step 0.."+(s.S-1)+")"));
  d.appendChild(this.heat());
  const info=[]; for(const k in s.info){ info.push(k+": "+(typeof s.info[k]==="object"?JSON.stringify(s.info[k]):s.info[k])); }
  if(info.length) d.appendChild(el("div","info",info.join("   ")));
  this.render();
};
View.prototype.heat=function(){
  const s=this.s, L=s.t.length, S=Math.max(1,s.S);
  const cv=document.createElement("canvas"); cv.className="heat";
  const cw=Math.max(1,Math.floor(768/L)), ch=Math.max(2,Math.min(24,Math.floor(240/S)));
  cv.width=L*cw; cv.height=S*ch; const g=cv.getContext("2d");
  g.fillStyle="#f3f3f3"; g.fillRect(0,0,cv.width,cv.height);
  for(let j=0;j<L;j++){const u=s.u[j]; if(u<0) continue;
    g.fillStyle=s.lp?probColour(s.lp[j]).replace("80%)","40%)"):"#333"; g.fillRect(j*cw,u*ch,cw,ch);}
  this.heatCanvas=cv; return cv;
};
View.prototype.go=function(step){
  if(!this.built) this.build();
  this.step=Math.max(0,Math.min(this.s.S,step)); this.render();
};
View.prototype.render=function(){
  if(!this.built) return;
  const s=this.s, st=this.step, L=s.t.length, useColour=colour.checked && s.lp;
  let shown=0, now=0;
  for(let j=0;j<L;j++){const t=this.spans[j], u=s.u[j];
    const on=u<st, fresh=u===st-1;
    t.textContent=on?V[s.t[j]]:MASK;
    t.classList.toggle("mask",!on); t.classList.toggle("now",fresh);
    t.style.background=(on&&useColour&&!fresh)?probColour(s.lp[j]):"";
    if(on) shown++; if(fresh) now++;}
  this.range.value=st;
  this.readout.textContent="after step "+st+" / "+s.S+"   ("+shown+" of "+L+" committed, +"+now+")";
  this.root.dataset.step=st; this.root.dataset.shown=shown;
};
DATA.samples.forEach((s,i)=>{const v=new View(i,s); views.push(v); list.appendChild(v.root);});
colour.addEventListener("change",()=>views.forEach(v=>v.render()));
// lazy: a sample's canvas, buttons and heat map are built when it is first opened
const hash=new URLSearchParams(location.hash.slice(1));
const first=views[Math.min(views.length-1, +(hash.get("sample")||0))];
first.root.open=true; first.build();
if(hash.has("step")) first.go(+hash.get("step"));
document.getElementById("openall").addEventListener("click",()=>views.forEach(v=>{v.root.open=true; v.build();}));
document.getElementById("closeall").addEventListener("click",()=>views.forEach(v=>{v.root.open=false;}));
if(hash.get("open")==="all") document.getElementById("openall").click();
if(hash.has("selftest")){
  const v=views[0]; v.first.click(); const seen=[];
  const snap=()=>seen.push({step:v.step, shown:v.spans.map(t=>t.classList.contains("mask")?null:t.textContent),
    now:v.spans.filter(t=>t.classList.contains("now")).length});
  snap(); for(let k=0;k<v.s.S;k++){ v.next.click(); snap(); }
  v.prev.click(); snap();
  const out=document.getElementById("selftest"); out.hidden=false; out.textContent=JSON.stringify(seen);
}
document.body.dataset.renderMs=(performance.now()-T0).toFixed(1);
document.body.dataset.samples=views.length;
})();
"""


# ----------------------------------------------------------------------------- command line
def find_tokenizer(spec: str | None, samples: Sequence[Path]) -> Any | None:
    """``--tokenizer``: a path or hub id, ``tiny``, or (None) the run beside the samples file."""
    if spec == "none":
        return None
    if spec == "tiny":
        from dllm_rl.models.tiny import build_tiny_tokenizer

        return build_tiny_tokenizer()
    if spec is not None:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(spec)
    for path in samples:
        run = Path(path).resolve().parent
        latest = run / "checkpoints" / "latest"
        if latest.is_file():
            model = run / "checkpoints" / latest.read_text().strip() / "model"
            if (model / "tokenizer.json").is_file() or (model / "tokenizer_config.json").is_file():
                from transformers import AutoTokenizer

                return AutoTokenizer.from_pretrained(str(model))
        config = run / "config.yaml"
        if config.is_file():
            import yaml

            model_cfg = (yaml.safe_load(config.read_text()) or {}).get("model", {})
            if model_cfg.get("name_or_path") == "tiny":
                return find_tokenizer("tiny", [])
    return None


def _needs_tokenizer(paths: Iterable[Path]) -> bool:
    for path in paths:
        with open(path) as f:
            line = f.readline()
        if line.strip() and "tokens" not in json.loads(line):
            return True
    return False


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dllm_rl.viz.viewer",
        description="Write a self-contained HTML replay of the trajectories in samples.jsonl files.",
    )
    p.add_argument("samples", nargs="+", type=Path, help="eval or training samples.jsonl files")
    p.add_argument("--out", type=Path, default=Path("trajectories.html"))
    p.add_argument(
        "--tokenizer",
        default=None,
        help="path or hub id, 'tiny', or 'none'; default: from the run directory "
        "(training rows carry ids only; eval rows carry their token texts)",
    )
    p.add_argument("--limit", type=int, default=100, help="at most N samples (default 100)")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    for path in args.samples:
        if not path.is_file():
            p.error(f"{path}: no such file")
    tokenizer = None
    if args.tokenizer is not None or _needs_tokenizer(args.samples):
        tokenizer = find_tokenizer(args.tokenizer, args.samples)
        if tokenizer is None:
            log("no tokenizer found (pass --tokenizer PATH or tiny): showing token ids")
    samples = samples_from_jsonl(args.samples, tokenizer, args.limit)
    title = args.title or " + ".join(str(s) for s in args.samples)
    out = write_viewer(samples, args.out, title)
    log(f"wrote {out} ({len(samples)} samples, {out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
