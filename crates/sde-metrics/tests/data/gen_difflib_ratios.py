"""Regenerates difflib_ratios.json: expected `difflib.SequenceMatcher(None, a, b).ratio()` values.

Run with python3 from this directory. Ratios are stored as `repr` strings so that they parse
exactly.
"""
import difflib, json, random
rng = random.Random(20240419)
pairs = [
    ("", ""), ("a", ""), ("", "a"), ("abcd", "bcde"), (" abcd", "abcd abcd"), ("ab", "ba"),
    ("invaded", "invade"), ("invade", "invaded"), ("attack", "attacked"), ("led to", "led"),
    ("il-2 gene", "il-2"), ("nf-kappa b", "nf-kappab"), ("t cells", "t cell"),
    ("private", "privately"), ("abcabcabc", "cba"), ("aaaaab", "baaaaa"),
    ("食品评价", "食品"), ("服务人员态度", "服务态度"), ("正面偏多", "正面"), ("停车方便程度", "交通便利程度"),
    ("human immunodeficiency virus type 1", "hiv-1"), ("the cat sat", "the hat sat on"),
    ("qabxcd", "abycdf"), ("cataclysm", "catastrophe"), ("war", "warfare"), ("fought", "fight"),
    ("é", "e\u0301"), ("😀a😀", "a😀"),
]
alph = "abcde "
def rand_str(n, alphabet):
    return "".join(rng.choice(alphabet) for _ in range(n))
# Long strings (autojunk territory: len(b) >= 200), with skewed alphabets so some chars are popular.
for n_a, n_b, alphabet in [(150, 199, alph), (150, 200, alph), (250, 250, alph), (300, 210, "ab"),
                           (80, 400, "abcdefghijklmnopqrstuvwxyz"), (400, 80, "abcdefghijklmnopqrstuvwxyz"),
                           (220, 220, "abcdefghijklmnopqrstuvwxyz" * 1 + "e" * 30 + " " * 40),
                           (500, 600, "食品评价服务态度正面中性负面未提及，。 ")]:
    a = rand_str(n_a, alphabet)
    b = rand_str(n_b, alphabet)
    pairs.append((a, b))
    # a mutated copy of b so there are long matches interrupted by edits
    bl = list(b)
    for _ in range(max(1, n_b // 20)):
        k = rng.randrange(len(bl))
        bl[k] = rng.choice(alphabet)
    pairs.append(("".join(bl), b))
# Exactly-200 boundary with a character that is popular only at 200 (count 4 > 200//100+1 = 3)
b = "x" * 4 + "".join(rng.choice("abcdefghijklmnopqrstuvw") for _ in range(196))
pairs.append(("xxxx" + b[4:60], b))
pairs.append(("xxxx" + b[4:60], b[:199]))
# Short random pairs
for _ in range(40):
    pairs.append((rand_str(rng.randrange(0, 15), "abcab "), rand_str(rng.randrange(0, 15), "abcab ")))
rows = [{"a": a, "b": b, "ratio": repr(difflib.SequenceMatcher(None, a, b).ratio())} for a, b in pairs]
with open("difflib_ratios.json", "w", encoding="utf-8") as f:
    json.dump(rows, f, ensure_ascii=False, indent=0)
print(len(rows))
