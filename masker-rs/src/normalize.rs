//! The normalised view the detectors search, and the map from it back to the original text.
//!
//! The view is the text in NFKC (so full-width `５` and `＠` are `5` and `@`), with format
//! characters (zero-width space, joiners, word joiner, soft hyphen, BOM, bidi marks) dropped,
//! Unicode spaces as `' '` and Unicode dashes as `-`. ASCII is its own view, so a pure-ASCII
//! push is copied as is and costs no map entries.
//!
//! The text is normalised *segment by segment*, cut only where no normalisation can reach
//! across: before an ASCII char, before a char that is a stable starter (its compatibility
//! decomposition starts with a starter that never composes with what precedes it), after an
//! ASCII char nothing composes onto (anything but letters and `<=>`), and, so that a run of
//! combining marks cannot hold text forever, after [`MAX_SEGMENT`] chars. The cuts depend only
//! on the text, so the view is the same however the input was cut into pushes.
//!
//! Each segment whose view differs from it is one [`Repl`]; everything between is identity.
//! Entity spans in the view map to the original bytes rounded out to whole segments
//! ([`OffsetMap::start`], [`OffsetMap::end`]), so a zero-width char inside an entity is
//! replaced with it, and the text around it is emitted byte for byte.

use std::collections::VecDeque;

use unicode_normalization::char::{canonical_combining_class, decompose_compatible};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Most chars one segment holds before a cut is forced (bounds the normaliser's hold-back).
pub(crate) const MAX_SEGMENT: usize = 32;

/// Most consecutive format chars dropped; the rest of a longer run stays in the view. This
/// bounds the original bytes behind one byte of the view, hence the stream hold-back.
pub(crate) const MAX_DROPPED_RUN: usize = 8;

/// One segment whose view differs from its original: view `[norm, norm + nlen)` stands for
/// original `[orig, orig + olen)`, whose bytes are kept at `text` (absolute, in
/// [`OffsetMap::otext`]). `nlen == 0` for dropped format chars.
#[derive(Debug, Clone, Copy)]
struct Repl {
    norm: usize,
    nlen: usize,
    orig: usize,
    olen: usize,
    text: usize,
}

impl Repl {
    fn norm_end(&self) -> usize {
        self.norm + self.nlen
    }
    fn orig_end(&self) -> usize {
        self.orig + self.olen
    }
}

/// View offsets to original offsets (both absolute). Identity outside the kept [`Repl`]s.
#[derive(Debug, Default)]
pub(crate) struct OffsetMap {
    repls: VecDeque<Repl>,
    /// Where the identity before the first kept repl is anchored (view, original).
    base: (usize, usize),
    /// Original bytes of the kept repls, from absolute offset `otext_origin`.
    otext: String,
    otext_origin: usize,
}

impl OffsetMap {
    fn after(r: Option<&Repl>, base: (usize, usize), p: usize) -> usize {
        match r {
            Some(r) => r.orig_end() + (p - r.norm_end()),
            None => base.1 + (p - base.0),
        }
    }

    /// Original offset where the view char at `p` starts (a whole segment's start inside a
    /// repl; dropped chars just before `p` are not included).
    pub(crate) fn start(&self, p: usize) -> usize {
        let j = self.repls.partition_point(|r| r.norm <= p);
        let prev = j.checked_sub(1).map(|i| &self.repls[i]);
        match prev {
            Some(r) if r.nlen > 0 && p < r.norm_end() => r.orig,
            r => Self::after(r, self.base, p),
        }
    }

    /// Original offset where the view char ending at `p` ends (rounded up to a whole
    /// segment; dropped chars just after `p` are not included).
    pub(crate) fn end(&self, p: usize) -> usize {
        let j = self.repls.partition_point(|r| r.norm < p);
        let prev = j.checked_sub(1).map(|i| &self.repls[i]);
        match prev {
            Some(r) if r.nlen > 0 && p <= r.norm_end() => r.orig_end(),
            r => Self::after(r, self.base, p),
        }
    }

    /// Where text released up to view offset `p` ends in the original: `end(p)`, except
    /// inside a multi-char segment, whose original goes out whole with what follows.
    pub(crate) fn release(&self, p: usize) -> usize {
        let j = self.repls.partition_point(|r| r.norm < p);
        match j.checked_sub(1).map(|i| &self.repls[i]) {
            Some(r) if r.nlen > 0 && p < r.norm_end() => r.orig,
            _ => self.end(p),
        }
    }

    /// The view end of the segment holding view offset `p` (`p` itself at a segment edge).
    pub(crate) fn round_up(&self, p: usize) -> usize {
        let j = self.repls.partition_point(|r| r.norm < p);
        match j.checked_sub(1).map(|i| &self.repls[i]) {
            Some(r) if p < r.norm_end() => r.norm_end(),
            _ => p,
        }
    }

    /// Append original `[from, to)` to `out`; identity parts come from `view` (whose first
    /// byte is at absolute view offset `view_origin`).
    pub(crate) fn copy(
        &self,
        from: usize,
        to: usize,
        view: &str,
        view_origin: usize,
        out: &mut String,
    ) {
        if from >= to {
            return;
        }
        let j = self.repls.partition_point(|r| r.orig_end() <= from);
        let mut anchor = j.checked_sub(1).map_or(self.base, |i| {
            let r = &self.repls[i];
            (r.norm_end(), r.orig_end())
        });
        let mut at = from;
        let identity = |a: usize, b: usize, anchor: (usize, usize), out: &mut String| {
            if a < b {
                let v = anchor.0 + (a - anchor.1) - view_origin;
                out.push_str(&view[v..v + (b - a)]);
            }
        };
        for r in self.repls.range(j..) {
            if r.orig >= to {
                break;
            }
            identity(at, r.orig, anchor, out);
            let t = r.text - self.otext_origin;
            out.push_str(&self.otext[t..t + r.olen]);
            at = r.orig_end();
            anchor = (r.norm_end(), r.orig_end());
        }
        identity(at, to.max(at), anchor, out);
    }

    /// Forget repls that end before view offset `norm` and at or before original offset
    /// `orig` (no query will look there again; dropped chars at `norm` are kept).
    pub(crate) fn prune(&mut self, norm: usize, orig: usize) {
        while let Some(r) = self.repls.front() {
            if r.norm_end() >= norm || r.orig_end() > orig {
                break;
            }
            self.base = (r.norm_end(), r.orig_end());
            self.repls.pop_front();
        }
        let keep = self
            .repls
            .front()
            .map_or(self.otext_origin + self.otext.len(), |r| r.text);
        let cut = keep - self.otext_origin;
        if cut >= 4096 && cut >= self.otext.len() / 2 || self.repls.is_empty() {
            self.otext.drain(..cut);
            self.otext_origin = keep;
        }
    }

    fn push(&mut self, norm: usize, nlen: usize, orig: &str, orig_at: usize) {
        if nlen == 0 {
            if let Some(last) = self.repls.back_mut() {
                if last.nlen == 0 && last.norm == norm && last.orig_end() == orig_at {
                    last.olen += orig.len();
                    self.otext.push_str(orig);
                    return;
                }
            }
        }
        self.repls.push_back(Repl {
            norm,
            nlen,
            orig: orig_at,
            olen: orig.len(),
            text: self.otext_origin + self.otext.len(),
        });
        self.otext.push_str(orig);
    }
}

/// Incremental normaliser: keeps the last, possibly incomplete, segment.
#[derive(Debug, Default)]
pub(crate) struct Normalizer {
    /// Original text after the last cut (at most [`MAX_SEGMENT`] chars).
    pending: String,
    /// Absolute view and original offsets of the next output.
    pub(crate) norm_at: usize,
    pub(crate) orig_at: usize,
    /// Consecutive format chars dropped just before `norm_at`.
    dropped: usize,
}

/// What the view makes of a char NFKC keeps.
#[derive(Debug, Clone, Copy)]
enum Fold {
    /// A format char: dropped.
    Drop,
    /// A Unicode dash or space: its ASCII counterpart.
    To(char),
}

/// How a char NFKC keeps appears in the view, if not as itself.
fn fold(c: char) -> Option<Fold> {
    match c {
        '\u{00AD}'
        | '\u{061C}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}' => Some(Fold::Drop),
        '\u{2010}'..='\u{2015}'
        | '\u{2043}'
        | '\u{2212}'
        | '\u{FE58}'
        | '\u{FE63}'
        | '\u{FF0D}' => Some(Fold::To('-')),
        '\u{1680}' | '\u{2028}' | '\u{2029}' | '\u{3000}' => Some(Fold::To(' ')),
        _ => None,
    }
}

/// Other-number chars (superscripts, fractions, circled numbers) stay as written: as digits
/// they would join the numbers around them (`½ 123-45-6789` is not the phone
/// `2 123-45-6789`), and they do not pass for ASCII digits anyway. Each is a segment.
fn verbatim(c: char) -> bool {
    matches!(c,
        '\u{B2}' | '\u{B3}' | '\u{B9}' | '\u{BC}'..='\u{BE}' | '\u{2070}'..='\u{209F}'
        | '\u{2150}'..='\u{215F}' | '\u{2189}' | '\u{2460}'..='\u{24FF}'
        | '\u{3248}'..='\u{325F}' | '\u{3280}'..='\u{32BF}' | '\u{1F100}'..='\u{1F10C}')
}

/// Could a following char compose with, or reorder before, this ASCII char?
fn composable_ascii(b: u8) -> bool {
    b.is_ascii_alphabetic() || matches!(b, b'<' | b'=' | b'>')
}

/// A segment may start at `c` whatever precedes it.
fn stable_starter(c: char) -> bool {
    if c.is_ascii() || verbatim(c) {
        return true;
    }
    if canonical_combining_class(c) != 0 {
        return false;
    }
    let mut first = None;
    decompose_compatible(c, |d| {
        first.get_or_insert(d);
    });
    let f = first.unwrap_or(c);
    canonical_combining_class(f) == 0 && is_nfkc_quick(std::iter::once(f)) != IsNormalized::Maybe
}

/// The segment's view is the segment itself.
fn unchanged(seg: &str) -> bool {
    seg.is_ascii()
        || seg.chars().next().is_some_and(verbatim)
        || (is_nfkc_quick(seg.chars()) == IsNormalized::Yes
            && !seg.chars().any(|c| fold(c).is_some()))
}

impl Normalizer {
    /// Normalise `text` after what is pending: append the view of every complete segment to
    /// `view` and its repls to `map`. With `last`, the pending segment is complete too.
    pub(crate) fn push(&mut self, text: &str, last: bool, view: &mut String, map: &mut OffsetMap) {
        if text.is_ascii() && (self.pending.is_empty() || !text.is_empty()) {
            // Fast path: an ASCII char ends the pending segment, and ASCII is its own view.
            if !self.pending.is_empty() {
                let seg = std::mem::take(&mut self.pending);
                self.segment(&seg, view, map);
            }
            let held = usize::from(!last && ends_composable(text));
            let (now, rest) = text.split_at(text.len() - held);
            self.identity(now, view);
            self.pending.push_str(rest);
            return;
        }
        let mut all = std::mem::take(&mut self.pending);
        all.push_str(text);
        let b = all.as_bytes();
        let n = b.len();
        // `at` is a cut; `[ident, at)` is unchanged text not yet copied into `view`.
        let (mut at, mut ident) = (0, 0);
        while at < n {
            let k = b[at..]
                .iter()
                .position(|&x| x >= 0x80)
                .map_or(n, |k| at + k);
            if k == n {
                let held = usize::from(!last && ends_composable(&all[at..]));
                self.identity(&all[ident..n - held], view);
                self.pending.push_str(&all[n - held..]);
                return;
            }
            let c = all[k..].chars().next().expect("char at k");
            let s0 = if k > at && composable_ascii(b[k - 1]) && !stable_starter(c) {
                k - 1
            } else {
                k
            };
            let Some(e) = segment_end(&all, s0).or(last.then_some(n)) else {
                self.identity(&all[ident..s0], view);
                self.pending.push_str(&all[s0..]);
                return;
            };
            let seg = &all[s0..e];
            if !unchanged(seg) {
                self.identity(&all[ident..s0], view);
                self.segment(seg, view, map);
                ident = e;
            }
            at = e;
        }
        self.identity(&all[ident..], view);
    }

    fn identity(&mut self, s: &str, view: &mut String) {
        if !s.is_empty() {
            view.push_str(s);
            self.norm_at += s.len();
            self.orig_at += s.len();
            self.dropped = 0;
        }
    }

    /// Append the view of one complete segment.
    fn segment(&mut self, seg: &str, view: &mut String, map: &mut OffsetMap) {
        if unchanged(seg) {
            self.identity(seg, view);
            return;
        }
        let start = view.len();
        for c in seg.nfkc() {
            match fold(c) {
                Some(Fold::Drop) if self.dropped < MAX_DROPPED_RUN => self.dropped += 1,
                Some(Fold::Drop) => view.push(c),
                Some(Fold::To(f)) => {
                    view.push(f);
                    self.dropped = 0;
                }
                None => {
                    view.push(c);
                    self.dropped = 0;
                }
            }
        }
        let nlen = view.len() - start;
        if view[start..] != *seg {
            map.push(self.norm_at, nlen, seg, self.orig_at);
        }
        self.norm_at += nlen;
        self.orig_at += seg.len();
    }
}

/// The text ends in a char a following char could compose with (so its segment is open).
fn ends_composable(text: &str) -> bool {
    text.as_bytes().last().is_some_and(|&b| composable_ascii(b))
}

/// End of the segment starting at `s0` (a cut), or `None` if it may go on past the text.
fn segment_end(all: &str, s0: usize) -> Option<usize> {
    let mut prev: Option<char> = None;
    for (count, (i, c)) in all[s0..].char_indices().enumerate() {
        let cut =
            count > 0 && (stable_starter(c) || prev.is_some_and(closes) || count >= MAX_SEGMENT);
        if cut {
            return Some(s0 + i);
        }
        prev = Some(c);
    }
    prev.filter(|&p| closes(p)).map(|_| all.len())
}

/// Nothing that follows `p` joins its segment.
fn closes(p: char) -> bool {
    (p.is_ascii() && !composable_ascii(p as u8)) || verbatim(p)
}
