#!/usr/bin/env python3
"""Write N deterministic benchmark rows as JSONL: {"id":"r<N>","prompt":"..."}.

Prompts are short (10-20 words), varied, and the same for the same N and seed on any
machine (a fixed xorshift generator, not Python's `random`, whose algorithm may change).

    gen_rows.py N OUT.jsonl [--seed S]
    gen_rows.py --body          # print one chat body (the wrk/oha request) to stdout
"""
import json
import sys

VERBS = ["Summarize", "Translate", "Explain", "Classify", "Rewrite", "Describe", "List",
         "Compare", "Outline", "Review", "Critique", "Paraphrase"]
OBJECTS = ["this customer review", "the following headline", "a short product description",
           "the meeting notes", "this support ticket", "the weather report", "a recipe",
           "the release notes", "this poem", "an error message", "the contract clause",
           "a travel itinerary"]
TAILS = ["in one sentence", "for a ten year old", "in plain English", "as three bullet points",
         "in a formal tone", "with a short title", "focusing on the main risk",
         "and give a sentiment label", "in under twenty words", "for a busy manager"]
WORDS = ["battery", "delivery", "screen", "price", "quality", "service", "refund", "colour",
         "size", "warranty", "speed", "noise", "comfort", "design", "update", "login",
         "invoice", "schedule", "budget", "garden", "river", "market", "lesson", "engine"]


class XorShift:
    def __init__(self, seed):
        self.s = (seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF or 1

    def next(self, n):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFFFFFFFFFF
        s ^= s >> 7
        s ^= (s << 17) & 0xFFFFFFFFFFFFFFFF
        self.s = s
        return s % n


def prompt(rng):
    words = [VERBS[rng.next(len(VERBS))], OBJECTS[rng.next(len(OBJECTS))],
             TAILS[rng.next(len(TAILS))] + ":"]
    # 10-20 words in all: the head above is 5-9 words, pad with topic words.
    head = sum(len(w.split()) for w in words)
    target = 10 + rng.next(11)
    words += [WORDS[rng.next(len(WORDS))] for _ in range(max(0, target - head))]
    return " ".join(words)


def main(argv):
    if argv[1:2] == ["--body"]:
        body = {"model": "qwen-plus",
                "messages": [{"role": "user", "content": prompt(XorShift(7))}]}
        sys.stdout.write(json.dumps(body, separators=(",", ":")))
        return 0
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    n, out = int(argv[1]), argv[2]
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 7
    rng = XorShift(seed)
    with open(out, "w", encoding="utf-8", buffering=1 << 20) as f:
        for i in range(1, n + 1):
            f.write(json.dumps({"id": f"r{i}", "prompt": prompt(rng)},
                               separators=(",", ":")))
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
