"""``probekit attention``: an offline attention dashboard page for a model on a task or a text."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("attention")
    def attention_cmd(
        model: Path = typer.Option(..., "--model", help="run directory or local Hugging Face checkpoint"),
        out: Path = typer.Option(..., "--out", help="the .html page to write (one offline file)"),
        task: Optional[str] = typer.Option(None, "--task", help="draw examples of this built-in task"),
        text: Optional[str] = typer.Option(None, "--text", help="draw this text (tokenized by the model's tokenizer)"),
        examples: int = typer.Option(4, "--examples", help="examples of --task to draw (the grid's selector)"),
        views: str = typer.Option("grid,scores,detail,tokens", "--views",
                                  help="comma-separated views, in page order"),
        layer: Optional[int] = typer.Option(None, "--layer", help="layer of the head the detail/token views open on"),
        head: Optional[int] = typer.Option(None, "--head", help="head the detail/token views open on"),
        seed: int = typer.Option(0, "--seed", help="seed of the task's examples"),
        device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda"),
    ) -> None:
        """Write an offline dashboard: every head, head scores, one head in detail, a token view."""
        import probekit as pk
        from probekit.errors import ProbekitError, unknown
        from probekit.viz.attention import VIEWS, dashboard
        from probekit.viz.html import write_html

        if (task is None) == (text is None):
            raise ProbekitError("give exactly one of --task NAME or --text \"...\"")
        if examples < 1:
            raise ProbekitError(f"--examples must be at least 1, got {examples}")
        if out.suffix.lower() not in (".html", ".htm"):
            raise ProbekitError(f"--out must be an .html file, got {str(out)!r}")
        chosen = [v.strip() for v in views.split(",") if v.strip()]
        for v in chosen:
            if v not in VIEWS:
                raise unknown("view", v, VIEWS)
        if not chosen:
            raise ProbekitError(f"--views is empty (valid: {', '.join(VIEWS)})")
        if (layer is None) != (head is None):
            raise ProbekitError("give both --layer and --head, or neither")
        m = pk.load(model, device=device)
        if layer is not None and not (0 <= layer < m.cfg.n_layers and 0 <= head < m.cfg.n_heads):
            raise ProbekitError(f"no head L{layer}H{head}: the model has layers 0..{m.cfg.n_layers - 1} "
                                f"and heads 0..{m.cfg.n_heads - 1}")
        if task is not None:
            tokens = pk.tasks.get(task).batch(examples, seed=seed, split="test").tokens
            if int(tokens.max()) >= m.cfg.d_vocab:
                raise ProbekitError(f"task {task!r} has token ids up to {int(tokens.max())} but the model's "
                                    f"vocabulary has {m.cfg.d_vocab}: was it trained on another task?")
        else:
            if not text.strip():
                raise ProbekitError("--text is empty")
            if getattr(m, "tokenizer", None) is None:
                raise ProbekitError(f"{model} has no tokenizer, so --text cannot be tokenized; use --task")
            tokens = m.to_tokens(text, truncate=False).cpu()
            if tokens.shape[1] > m.cfg.n_ctx:
                raise ProbekitError(f"--text is {tokens.shape[1]} tokens, longer than the model's context {m.cfg.n_ctx}")
        figs = dashboard(m, tokens, views=chosen, layer=layer, head=head)
        path = write_html(figs, out, title=f"probekit attention: {model.name}")
        typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {len(figs)} views)")
