"""Run a notebook non-interactively, papermill-style, with nbclient.

Used by ``fraud level0`` and the end-to-end tests. Parameters are injected as a new cell
right after the cell tagged ``parameters`` (tagged ``injected-parameters``, as papermill
does), so a notebook keeps working when opened by hand with its own defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fraud_detection.errors import FraudError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def _literal(value: Any) -> str:
    """Python source for ``value``; paths become strings so the cell needs no import."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return repr(value)


def _parameters_source(parameters: dict[str, Any]) -> str:
    lines = ["# Parameters injected by fraud_detection.notebooks.run_notebook"]
    for name, value in parameters.items():
        if not name.isidentifier():
            raise FraudError(f"notebook parameter {name!r} is not a valid Python name")
        lines.append(f"{name} = {_literal(value)}")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_notebook(
    path: Path,
    output_dir: Path,
    parameters: dict[str, Any] | None = None,
    timeout: int = 600,
) -> Path:
    """Execute the notebook at ``path`` and return the path of the executed copy.

    The kernel is ``python3`` run by the current interpreter (jupyter_client replaces the
    kernelspec's ``python`` with ``sys.executable``), the working directory is the
    repository root, and the executed notebook, outputs included, is written to
    ``output_dir/<name>.executed.ipynb`` whether or not it succeeded.

    Raises:
        FraudError: the notebook is missing, has no ``parameters`` cell to inject after,
            or a cell failed; the message names the cell, the exception and the executed
            notebook holding the full traceback.
    """
    import nbformat
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from fraud_detection.config import project_dir

    path = Path(path)
    if not path.is_file():
        raise FraudError(f"notebook not found: {path}")
    nb = nbformat.read(path, as_version=4)

    if parameters:
        tagged = [
            i for i, cell in enumerate(nb.cells) if PARAMETERS_TAG in cell.metadata.get("tags", [])
        ]
        if not tagged:
            raise FraudError(
                f"{path}: no cell tagged {PARAMETERS_TAG!r} to inject {', '.join(parameters)} after"
            )
        injected = nbformat.v4.new_code_cell(
            _parameters_source(parameters), metadata={"tags": [INJECTED_TAG]}
        )
        nb.cells.insert(tagged[0] + 1, injected)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / f"{path.stem}.executed.ipynb"
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(project_dir())}},
    )
    try:
        client.execute(**_kernel_options())
    except CellExecutionError as exc:
        index = _failed_cell(nb)
        where = "a cell"
        if index is not None:  # 1-based, as in the executed notebook; In [n] as Jupyter shows
            where = f"cell {index + 1} (In [{nb.cells[index].get('execution_count')}])"
        raise FraudError(
            f"{path.name}: {where} failed: {exc.ename}: {_one_line(exc.evalue)} "
            f"(full traceback in {executed})"
        ) from None  # the traceback is in the executed notebook, with the cell's outputs
    except CellTimeoutError as exc:
        raise FraudError(
            f"{path.name}: a cell ran longer than {timeout} s (partial outputs in {executed})"
        ) from exc
    except NoSuchKernel as exc:
        raise FraudError(
            "no Jupyter kernel 'python3' in this environment: install ipykernel (uv sync)"
        ) from exc
    except DeadKernelError as exc:
        raise FraudError(
            f"{path.name}: the kernel died: {_one_line(str(exc))} (outputs in {executed})"
        ) from exc
    finally:
        nbformat.write(nb, executed)
    return executed


def _kernel_options() -> dict[str, Any]:
    """Encrypt the kernel's sockets when this jupyter_client and libzmq can (CurveZMQ).

    Without it ipykernel warns on every run that it talks over plain TCP.
    """
    import zmq
    from jupyter_client.manager import KernelManager

    if "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve"):
        return {"transport_encryption": "auto"}
    return {}


def _failed_cell(nb: Any) -> int | None:
    """Index of the first cell whose outputs hold an error (nbclient records it in place)."""
    for index, cell in enumerate(nb.cells):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return index
    return None
