//! The shared prefilter: one byte pass over the text finds the *anchors* the character-class
//! detectors need (`@`, digit runs, `:`, MAC separators); each such detector then runs its
//! regex only on the windows of start positions its anchors allow. Prose without anchors costs
//! one table lookup per byte instead of eight lazy-DFA passes.
//!
//! Windows never change what a detector finds. An [`Anchor`] states a necessary condition on
//! every match of its pattern (e.g. "a digit at offset 0 or 1"), so the windows hold every
//! position where a match can start. [`super::Detector`] searches window by window
//! (leftmost-first, non-overlapping, same as one pass over the text): a search from `p` over
//! `hay[..b + max_len]` finds the same leftmost match as over the whole text when that match
//! starts before `b`, since it ends before the cut. Matches starting at or after `b` are
//! ignored there and found in a later window. The unit tests below compare both on random
//! text for every anchored detector.

/// What every match of an anchored built-in contains, and so where it can start. Each
/// variant's comment is the argument from the pattern in [`super::builtin`]; `\b` is ASCII
/// (`(?-u:\b)`), so a match that opens with `\b` and a word byte starts at the start of the
/// text or after a non-word byte. A "run" is a maximal run of ASCII digits `[r0, r1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// `email`: `[local]{1,64}@[A-Za-z0-9]` (or 24 chars of any script): an `@` at byte
    /// offset 1..=96 with only local-part bytes before it and an alphanumeric after it.
    Email,
    /// `credit_card`: `\b` then `[0-9]{12,19}\b` (a run of 12-19) or `[0-9]{4}[ -]` (a run of
    /// 4 followed by a space or dash), at the run's start.
    Card,
    /// `us_ssn`: `\b[0-9]{3}[- ]`: a run of 3 followed by a dash or space, at its start.
    Ssn,
    /// `ipv4`: `\b(?:[0-9]{1,3}\.)`: a run of 1-3 followed by a dot, at its start.
    Ipv4,
    /// `iban`: `\b[A-Za-z]{2}[0-9]`: two letters right before a run, after a boundary.
    Iban,
    /// `phone`: `[+(][0-9]` (start at the `+` or `(` right before a run) or `\b[0-9]` (a run
    /// at a boundary, start at the run).
    Phone,
    /// Context-scored numbers and dates: `\b[A-Z]{0,2}[0-9]`: a run at a boundary, or one or
    /// two upper-case letters right before a run, after a boundary; start there.
    Number,
    /// `ipv6`: the first group is `[hex]{1,4}:` or `::?`, so a `:` at offset 0..=4, followed by
    /// a hex digit or `:` (every match continues after its first colon).
    Ipv6,
    /// `mac`: `\b` then `[hex]{2}[:-][hex]{2}[:-]` or `[hex]{4}\.[hex]{4}\.` at the start.
    Mac,
}

/// How far [`Anchors::scan`] follows a digit run past its end bound (more than the longest
/// run length any anchor distinguishes).
const RUN_PAST: usize = 24;

const DIGIT: u8 = 1;
const AT: u8 = 2;
const COLON: u8 = 4;
const MAC_SEP: u8 = 8;

/// Byte classes the pass looks for; zero for every other byte.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = DIGIT;
        b += 1;
    }
    t[b'@' as usize] = AT;
    t[b':' as usize] = COLON | MAC_SEP;
    t[b'-' as usize] = MAC_SEP;
    t[b'.' as usize] = MAC_SEP;
    t
};

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A byte of an email local part: ASCII local chars, or any byte of a non-ASCII char (letters
/// of any script; the pattern decides which chars).
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-') || b >= 0x80
}

/// Longest email local part in bytes (64 ASCII or 24 chars of up to 4 bytes).
const LOCAL_MAX: usize = 96;

/// Anchors found in `hay[from..]` by one pass. Reused across scans (no allocation once warm).
#[derive(Debug, Default)]
pub(crate) struct Anchors {
    /// Maximal runs of ASCII digits, `[start, end)`.
    digit_runs: Vec<(usize, usize)>,
    at: Vec<usize>,
    colon: Vec<usize>,
    mac_sep: Vec<usize>,
}

impl Anchors {
    /// Scan `hay[from..to]`. A digit run crossing `to` is followed at most [`RUN_PAST`]
    /// bytes further: every run property a window depends on (length up to 19, the byte
    /// after it) is then decided for starts before `to`, and a long run costs a bounded
    /// amount per scan.
    pub(crate) fn scan(&mut self, hay: &[u8], from: usize, to: usize) {
        self.digit_runs.clear();
        self.at.clear();
        self.colon.clear();
        self.mac_sep.clear();
        let len = to.min(hay.len());
        let run_len = (len + RUN_PAST).min(hay.len());
        let mut i = from;
        while i < len {
            let c = CLASS[hay[i] as usize];
            if c == 0 {
                i += 1;
                continue;
            }
            if c & DIGIT != 0 {
                let s = i;
                i += 1;
                while i < run_len && hay[i].is_ascii_digit() {
                    i += 1;
                }
                self.digit_runs.push((s, i));
                continue;
            }
            if c & AT != 0 {
                self.at.push(i);
            }
            if c & COLON != 0 {
                self.colon.push(i);
            }
            if c & MAC_SEP != 0 {
                self.mac_sep.push(i);
            }
            i += 1;
        }
    }

    /// The windows `[a, b)` of possible match starts in `hay[from..]` for `anchor`, sorted and
    /// disjoint, into `out`.
    pub(crate) fn windows(
        &self,
        anchor: Anchor,
        hay: &[u8],
        from: usize,
        out: &mut Vec<(usize, usize)>,
    ) {
        out.clear();
        let len = hay.len();
        let hex = |i: usize| i < len && hay[i].is_ascii_hexdigit();
        // A start at `s` needs `(?-u:\b)` before a word byte: start of text or a non-word byte.
        let boundary = |s: usize| s == 0 || !is_word(hay[s - 1]);
        let one = |out: &mut Vec<(usize, usize)>, s: usize| {
            if s >= from {
                out.push((s, s + 1));
            }
        };
        match anchor {
            Anchor::Email => {
                for &p in &self.at {
                    if p + 1 >= len || !hay[p + 1].is_ascii_alphanumeric() {
                        continue;
                    }
                    let lim = p.saturating_sub(LOCAL_MAX).max(from);
                    let mut s = p;
                    while s > lim && is_local(hay[s - 1]) {
                        s -= 1;
                    }
                    if s < p {
                        out.push((s, p));
                    }
                }
            }
            Anchor::Card | Anchor::Ssn | Anchor::Ipv4 => {
                for &(r0, r1) in &self.digit_runs {
                    let next = hay.get(r1).copied();
                    let ok = match anchor {
                        Anchor::Card => {
                            (12..=19).contains(&(r1 - r0))
                                || (r1 - r0 == 4 && matches!(next, Some(b' ' | b'-')))
                        }
                        Anchor::Ssn => r1 - r0 == 3 && matches!(next, Some(b' ' | b'-')),
                        _ => r1 - r0 <= 3 && next == Some(b'.'),
                    };
                    if ok && boundary(r0) {
                        one(out, r0);
                    }
                }
            }
            Anchor::Number => {
                for &(r0, _) in &self.digit_runs {
                    for k in (0..=2).rev() {
                        if r0 >= k
                            && hay[r0 - k..r0].iter().all(u8::is_ascii_uppercase)
                            && boundary(r0 - k)
                        {
                            one(out, r0 - k);
                        }
                    }
                }
            }
            Anchor::Iban => {
                for &(r0, _) in &self.digit_runs {
                    if r0 >= 2
                        && hay[r0 - 1].is_ascii_alphabetic()
                        && hay[r0 - 2].is_ascii_alphabetic()
                        && boundary(r0 - 2)
                    {
                        one(out, r0 - 2);
                    }
                }
            }
            Anchor::Phone => {
                for &(r0, _) in &self.digit_runs {
                    if r0 > 0 && matches!(hay[r0 - 1], b'+' | b'(') {
                        one(out, r0 - 1);
                    }
                    if boundary(r0) {
                        one(out, r0);
                    }
                }
            }
            Anchor::Ipv6 => {
                for &p in &self.colon {
                    if hex(p + 1) || (p + 1 < len && hay[p + 1] == b':') {
                        out.push((p.saturating_sub(4).max(from), p + 1));
                    }
                }
            }
            Anchor::Mac => {
                for &p in &self.mac_sep {
                    let (s, next_sep) = if hay[p] == b'.' {
                        if p < 4 {
                            continue;
                        }
                        (p - 4, p + 5)
                    } else {
                        if p < 2 {
                            continue;
                        }
                        (p - 2, p + 3)
                    };
                    if (s..p).all(hex)
                        && (p + 1..next_sep).all(hex)
                        && next_sep < len
                        && (hay[next_sep] == hay[p]
                            || (hay[p] != b'.' && matches!(hay[next_sep], b':' | b'-')))
                        && boundary(s)
                    {
                        one(out, s);
                    }
                }
                // `.` anchors start 4 back, `:`/`-` 2 back: restore the order.
                out.sort_unstable();
            }
        }
        // Merge overlapping or touching windows.
        let mut w = 0;
        for r in 0..out.len() {
            if w > 0 && out[r].0 <= out[w - 1].1 {
                out[w - 1].1 = out[w - 1].1.max(out[r].1);
            } else {
                out[w] = out[r];
                w += 1;
            }
        }
        out.truncate(w);
    }
}
