//! Ratcliff/Obershelp similarity, bit-compatible with Python's `difflib.SequenceMatcher`.
//!
//! The study's soft NER and ED matching compare strings with
//! `difflib.SequenceMatcher(None, a, b).ratio()`. [`ratio`] reproduces that value exactly:
//! it works on Unicode scalar values (Python `str` items), applies the "autojunk" heuristic
//! (when `b` has at least 200 items, every item occurring more than `len(b) / 100 + 1` times is
//! dropped from the match index, though it can still extend a match) and breaks ties between
//! longest matches the same way (earliest in `a`, then earliest in `b`).

use std::collections::HashMap;

/// Length from which `b`'s frequent items are treated as "popular" (Python's autojunk).
const AUTOJUNK_MIN_LEN: usize = 200;

/// `difflib.SequenceMatcher(None, a, b).ratio()`: `2 * M / (len(a) + len(b))`, where `M` is the
/// number of matched characters; `1.0` when both strings are empty.
pub fn ratio(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let total = a.len() + b.len();
    if total == 0 {
        return 1.0;
    }
    let matched = SequenceMatcher::new(&a, &b).matched_len();
    2.0 * matched as f64 / total as f64
}

/// A longest common block: `a[a_start..a_start + len] == b[b_start..b_start + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    a_start: usize,
    b_start: usize,
    len: usize,
}

/// The state `difflib` keeps for `b`: where each non-popular item occurs.
struct SequenceMatcher<'s> {
    a: &'s [char],
    b: &'s [char],
    /// Ascending positions in `b` of every item that is not popular.
    b2j: HashMap<char, Vec<usize>>,
}

impl<'s> SequenceMatcher<'s> {
    fn new(a: &'s [char], b: &'s [char]) -> Self {
        let mut b2j: HashMap<char, Vec<usize>> = HashMap::new();
        for (j, &c) in b.iter().enumerate() {
            b2j.entry(c).or_default().push(j);
        }
        if b.len() >= AUTOJUNK_MIN_LEN {
            let limit = b.len() / 100 + 1;
            b2j.retain(|_, positions| positions.len() <= limit);
        }
        SequenceMatcher { a, b, b2j }
    }

    /// Total size of the matching blocks (`sum(m.size for m in get_matching_blocks())`).
    fn matched_len(&self) -> usize {
        let mut total = 0;
        let mut queue = vec![(0, self.a.len(), 0, self.b.len())];
        // Scratch buffers for `find_longest_match`, reused across calls.
        let mut scratch = Scratch::new(self.b.len());
        while let Some((alo, ahi, blo, bhi)) = queue.pop() {
            let m = self.find_longest_match(alo, ahi, blo, bhi, &mut scratch);
            if m.len == 0 {
                continue;
            }
            total += m.len;
            if alo < m.a_start && blo < m.b_start {
                queue.push((alo, m.a_start, blo, m.b_start));
            }
            if m.a_start + m.len < ahi && m.b_start + m.len < bhi {
                queue.push((m.a_start + m.len, ahi, m.b_start + m.len, bhi));
            }
        }
        total
    }

    /// Python's `find_longest_match(alo, ahi, blo, bhi)` with no junk function.
    fn find_longest_match(
        &self,
        alo: usize,
        ahi: usize,
        blo: usize,
        bhi: usize,
        scratch: &mut Scratch,
    ) -> Block {
        let (a, b) = (self.a, self.b);
        let (mut best_i, mut best_j, mut best_len) = (alo, blo, 0usize);
        scratch.clear_current();
        for (i, item) in a.iter().enumerate().take(ahi).skip(alo) {
            if let Some(positions) = self.b2j.get(item) {
                for &j in positions {
                    if j < blo {
                        continue;
                    }
                    if j >= bhi {
                        break;
                    }
                    let k = if j > 0 { scratch.current(j - 1) } else { 0 } + 1;
                    scratch.set_next(j, k);
                    if k > best_len {
                        best_i = i + 1 - k;
                        best_j = j + 1 - k;
                        best_len = k;
                    }
                }
            }
            scratch.advance();
        }
        // Popular items are not junk (there is no junk function), so they may extend the
        // match on both sides; the junk-only extension passes of difflib never fire here.
        while best_i > alo && best_j > blo && a[best_i - 1] == b[best_j - 1] {
            best_i -= 1;
            best_j -= 1;
            best_len += 1;
        }
        while best_i + best_len < ahi
            && best_j + best_len < bhi
            && a[best_i + best_len] == b[best_j + best_len]
        {
            best_len += 1;
        }
        Block {
            a_start: best_i,
            b_start: best_j,
            len: best_len,
        }
    }
}

/// Python's `j2len` / `newj2len` dictionaries as two dense arrays plus the list of touched
/// positions, so that clearing costs only what was written.
struct Scratch {
    current: Vec<usize>,
    current_touched: Vec<usize>,
    next: Vec<usize>,
    next_touched: Vec<usize>,
}

impl Scratch {
    fn new(len: usize) -> Self {
        Scratch {
            current: vec![0; len],
            current_touched: Vec::new(),
            next: vec![0; len],
            next_touched: Vec::new(),
        }
    }

    fn current(&self, j: usize) -> usize {
        self.current[j]
    }

    fn set_next(&mut self, j: usize, k: usize) {
        self.next[j] = k;
        self.next_touched.push(j);
    }

    /// `j2len = newj2len`.
    fn advance(&mut self) {
        for &j in &self.current_touched {
            self.current[j] = 0;
        }
        self.current_touched.clear();
        std::mem::swap(&mut self.current, &mut self.next);
        std::mem::swap(&mut self.current_touched, &mut self.next_touched);
    }

    fn clear_current(&mut self) {
        for &j in &self.current_touched {
            self.current[j] = 0;
        }
        self.current_touched.clear();
        for &j in &self.next_touched {
            self.next[j] = 0;
        }
        self.next_touched.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples() {
        // From the difflib documentation.
        assert!((ratio("abcd", "bcde") - 0.75).abs() < 1e-15);
        assert_eq!(ratio("", ""), 1.0);
        assert_eq!(ratio("abc", ""), 0.0);
        // " abcd" vs "abcd abcd": the whole of `a` matches at b[4..9].
        assert!((ratio(" abcd", "abcd abcd") - 10.0 / 14.0).abs() < 1e-15);
    }

    #[test]
    fn tie_break_prefers_earliest_in_a() {
        let a: Vec<char> = "ab".chars().collect();
        let b: Vec<char> = "ba".chars().collect();
        let m = SequenceMatcher::new(&a, &b);
        let mut s = Scratch::new(b.len());
        let block = m.find_longest_match(0, a.len(), 0, b.len(), &mut s);
        assert_eq!(
            block,
            Block {
                a_start: 0,
                b_start: 1,
                len: 1
            }
        );
    }
}
