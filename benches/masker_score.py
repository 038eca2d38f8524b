"""Per-type precision and recall of the masker and of Presidio on the labeled corpus.

    python benches/masker_corpus.py --per-type 150 --out /tmp/corpus.jsonl
    python benches/masker_score.py /tmp/corpus.jsonl

Presidio: presidio-analyzer 2.2.x pattern recognizers through ``NoOpNlpEngine`` (no spaCy
model), language ``en``, score threshold 0.3. A prediction counts if it overlaps a labelled
span of the same type (IPv4 and IPv6 pooled as ``ip``); a secret (``masker_corpus.SECRETS``)
counts only if predictions of its type cover the whole value, since any part left shows. On
negative documents any prediction flags the document. Also prints phone recall by locale,
recall of the secret types inside escaped JSON, the fraction of flagged negatives, and recall
on the Unicode-evasion documents by variant (kept out of the per-type figures).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict

from masker_corpus import SECRETS

from gateway._masker import Masker

TO_TYPE = {"ipv4": "ip", "ipv6": "ip"}
PRESIDIO = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "US_SSN": "us_ssn",
    "CREDIT_CARD": "credit_card",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip",
    "US_PASSPORT": "us_passport",
    "US_DRIVER_LICENSE": "us_driver_license",
    "US_ITIN": "us_itin",
    "US_BANK_NUMBER": "us_bank_account",
    "DATE_TIME": "date_of_birth",
}


def presidio_predict():
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(nlp_engine=engine)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine)
    entities = list(PRESIDIO)

    def predict(text: str) -> list[tuple[str, int, int]]:
        out = []
        for r in analyzer.analyze(text=text, language="en", entities=entities, score_threshold=0.3):
            s = len(text[: r.start].encode())
            out.append((PRESIDIO[r.entity_type], s, s + len(text[r.start : r.end].encode())))
        return out

    return predict


def masker_predict():
    m = Masker(["all"])

    def predict(text: str) -> list[tuple[str, int, int]]:
        return [(TO_TYPE.get(e, e), s, t) for e, s, t in m.mask_text(text)[1]]

    return predict


def found(kind: str, gs: int, ge: int, pred: list[tuple[str, int, int]]) -> bool:
    """Does the prediction catch this labelled value (see the module docstring)?"""
    spans = sorted((ps, pe) for k, ps, pe in pred if k == kind and ps < ge and gs < pe)
    if kind not in SECRETS:
        return bool(spans)
    covered = gs
    for ps, pe in spans:
        if ps > covered:
            return False
        covered = max(covered, pe)
    return covered >= ge


def score(docs: list[dict], predict) -> dict:
    tp, fn, fp = defaultdict(int), defaultdict(int), defaultdict(int)
    by_locale = defaultdict(lambda: [0, 0])
    by_variant = defaultdict(lambda: [0, 0])
    escaped = defaultdict(lambda: [0, 0])
    flagged = negatives = 0
    for d in docs:
        pred = predict(d["text"])
        gold = d["spans"]
        if "variant" in d:
            for kind, gs, ge in gold:
                by_variant[d["variant"]][0 if found(kind, gs, ge, pred) else 1] += 1
            continue
        if not gold:
            negatives += 1
            flagged += bool(pred)
        for kind, gs, ge in gold:
            hit = found(kind, gs, ge, pred)
            (tp if hit else fn)[kind] += 1
            if kind == "phone":
                by_locale[d["locale"]][0 if hit else 1] += 1
            if kind in SECRETS and d.get("escaped"):
                escaped[kind][0 if hit else 1] += 1
        for k, ps, pe in pred:
            if not any(kind == k and ps < ge and gs < pe for kind, gs, ge in gold):
                fp[k] += 1
    types = sorted(set(tp) | set(fn))
    return {
        "per_type": {
            t: {
                "precision": round(tp[t] / (tp[t] + fp[t]), 3) if tp[t] + fp[t] else None,
                "recall": round(tp[t] / (tp[t] + fn[t]), 3) if tp[t] + fn[t] else None,
                "n": tp[t] + fn[t],
            }
            for t in types
        },
        "phone_recall_by_locale": {
            loc: round(h / (h + m), 3) for loc, (h, m) in sorted(by_locale.items())
        },
        "secret_recall_in_escaped_json": {
            k: f"{h / (h + m):.3f} of {h + m}" for k, (h, m) in sorted(escaped.items())
        },
        "evasion_recall_by_variant": {
            v: f"{h / (h + m):.3f} of {h + m}" for v, (h, m) in sorted(by_variant.items())
        },
        "negatives_flagged": round(flagged / negatives, 4) if negatives else None,
        "negatives": negatives,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--no-presidio", action="store_true")
    args = ap.parse_args()
    with open(args.corpus, encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    res = {"masker": score(docs, masker_predict())}
    if not args.no_presidio:
        res["presidio"] = score(docs, presidio_predict())
    print(f"{'type':20} {'n':>5}  {'masker P/R':>13}  {'presidio P/R':>13}")
    for t, v in res["masker"]["per_type"].items():
        shared = t in PRESIDIO.values()
        p = res.get("presidio", {}).get("per_type", {}).get(t, {}) if shared else {}

        def pr(x: dict) -> str:
            keys = ("precision", "recall")
            return " / ".join(f"{x[k]:.2f}" if x.get(k) is not None else "  - " for k in keys)

        print(f"{t:20} {v['n']:5}  {pr(v):>13}  {pr(p) if p else '-':>13}")
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "per_type"} for k, v in res.items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
