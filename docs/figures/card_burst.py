"""Draw docs/figures/card_burst.png: one card's burst, offline and online.

``python docs/figures/card_burst.py [OUT.png]`` (or ``make figures``). Everything plotted
comes from the project's own functions, so the figure shows what the code does:

* the offline point-in-time rows: ``engineering.card_features``, one row per transaction
  (what Feast joins into the training set at that transaction's time);
* the online state: ``features.online.CardState`` after each transaction is appended,
  evaluated at every minute (``CardState.window_features``), i.e. what a request arriving
  at that minute would see: it decays between transactions;
* what the model saw: the state's features at each request, before the transaction is
  appended. They fall exactly on the offline rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_detection.features import engineering as fe
from fraud_detection.features.online import CardState, transaction_key

OUT = Path(__file__).with_suffix(".png")
CARD = 42
START = pd.Timestamp("2026-01-14 08:00", tz="UTC")
# (minutes after START, amount, merchant): a quiet morning, then a burst at new merchants.
TRANSACTIONS = [
    (0, 38.5, 1),
    (55, 12.0, 2),
    (170, 64.0, 1),
    (180, 249.0, 7),
    (183, 310.0, 8),
    (186, 295.0, 9),
    (190, 480.0, 10),
    (262, 22.0, 2),
]


def frame() -> pd.DataFrame:
    minutes, amounts, merchants = zip(*TRANSACTIONS, strict=True)
    return pd.DataFrame(
        {
            "transaction_id": [f"T{i}" for i in range(len(TRANSACTIONS))],
            "card_id": CARD,
            "merchant_id": np.array(merchants, dtype=np.int64),
            "amount": np.array(amounts, dtype=np.float64),
            "event_timestamp": (START + pd.to_timedelta(minutes, unit="min")).as_unit("us"),
        }
    )


def draw(out: Path = OUT) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tx = frame()
    offline = fe.card_features(tx, new_merchant_lookback=pd.Timedelta(days=6))
    micros = pd.DatetimeIndex(tx["event_timestamp"]).as_unit("us").asi8

    # Online: the state after each transaction, evaluated every minute until the next one.
    grid = START + pd.to_timedelta(np.arange(0, 300), unit="min")
    grid_us = pd.DatetimeIndex(grid).as_unit("us").asi8
    state = CardState.empty()
    seen, online_curve = [], np.zeros(len(grid))
    for i, row in tx.iterrows():
        at = int(micros[i])
        seen.append(state.window_features(CARD, at))  # what the model saw for this request
        key = transaction_key(row["transaction_id"], CARD, at, row["merchant_id"], row["amount"])
        updated = state.with_events([at], [row["amount"]], [row["merchant_id"]], [key])
        state = updated if updated is not None else state
        until = int(micros[i + 1]) if i + 1 < len(tx) else int(grid_us[-1]) + 1
        for j in np.flatnonzero((grid_us > at) & (grid_us <= until)):
            online_curve[j] = state.window_features(CARD, int(grid_us[j]))["card_txn_count_1h"]

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 5.2), sharex=True, gridspec_kw={"height_ratios": [1, 1.6]}
    )
    when = tx["event_timestamp"].dt.tz_convert(None)
    top.vlines(when, 0, tx["amount"], color="#4a6fa5", lw=2)
    top.scatter(when, tx["amount"], color="#4a6fa5", zorder=3)
    for t, amount, merchant in zip(when, tx["amount"], tx["merchant_id"], strict=True):
        top.annotate(f"m{merchant}", (t, amount), textcoords="offset points", xytext=(3, 4), size=7)
    top.set_ylabel("amount")
    top.set_title(f"card {CARD}: a burst at new merchants", loc="left", size=10)

    bottom.step(
        grid.tz_convert(None),
        online_curve,
        where="post",
        color="#9aa5b1",
        lw=1.5,
        label="online state: card_txn_count_1h for a request at that minute (decays)",
    )
    bottom.scatter(
        when,
        offline["card_txn_count_1h"],
        s=90,
        facecolors="none",
        edgecolors="#d1495b",
        lw=1.6,
        label="offline point-in-time row of each transaction (training set)",
        zorder=3,
    )
    bottom.scatter(
        when,
        [s["card_txn_count_1h"] for s in seen],
        s=18,
        color="#2e4057",
        label="what the model saw at serving time",
        zorder=4,
    )
    bottom.set_ylabel("card_txn_count_1h")
    bottom.set_ylim(-0.3, max(online_curve.max(), offline["card_txn_count_1h"].max()) + 1.2)
    bottom.legend(loc="upper left", fontsize=7.5, frameon=False)
    bottom.set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    target = draw(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
    print(f"figure written to {target}")
