//! The masking engine shared by whole-text and streaming masking.
//!
//! Whole-text masking is the streaming engine fed once and finished, so the two agree by
//! construction; the property tests check that any cut of the input gives the same output.
//!
//! A step scans the unreleased text with every detector (leftmost-first chains, validated),
//! resolves overlaps (earliest start, then open-ended entities, then longest, then detector
//! priority) and releases text up to a *release point* `R`:
//! - every position before `R` is *settled*: an anchored DFA over all detectors dies there
//!   before the end of the buffer (less a small margin), or it lies more than
//!   [`HOLD_BACK`] bytes back, beyond the longest bounded entity;
//! - no detector's raw match and no selected entity spans `R`;
//! - open-ended entities (`jwt`, `private_key`) that started before `R` are swallowed as they
//!   arrive (no bytes held), and replaced when they end.

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::{Anchored, Input};

use crate::detectors::prefilter::Anchors;
use crate::detectors::run::{Fed, RunState};
use crate::detectors::MAX_ENTITY_LEN;
use crate::error::{Error, Result};
use crate::masker::Masker;
use crate::styles::{push_hashed, HashState};

/// Upper bound on the streaming hold-back, in bytes: the longest bounded entity
/// ([`MAX_ENTITY_LEN`]) plus the look-ahead the validators use. Typically far less is held:
/// only the tail from the earliest position where an entity could still be in progress.
pub const HOLD_BACK: usize = MAX_ENTITY_LEN + 8;

/// Bytes after an anchored DFA's death that validators may still look at.
const MARGIN: usize = 4;

/// Look-behind context kept before unreleased text (validators look two bytes back, `\b`
/// one).
const CONTEXT: usize = 8;

/// Hard cap on unreleased text. An unbroken chain of overlapping candidate matches could
/// otherwise pin the release point; past this the stream fails closed
/// ([`Error::HoldBackExceeded`]) rather than release a possible half entity.
pub const MAX_PENDING: usize = 16 * 1024;

/// One detected entity: detector index and byte span in the original input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub det: usize,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone)]
struct Cand {
    det: usize,
    start: usize,
    end: usize,
    /// Open-ended entity: `Some(open)`; `open` = it runs to the end of the buffer.
    run: Option<(bool, Option<RunState>)>,
}

/// An open-ended entity being swallowed across pushes.
struct Absorb {
    det: usize,
    state: RunState,
    hash: Option<HashState>,
    /// Absolute start offset and bytes taken so far.
    start: usize,
    len: usize,
    /// Tentative bytes (a JWT's trailing `.`) not yet known to be part of it.
    maybe: Vec<u8>,
    /// Last bytes of the entity (ASCII), look-behind context for what follows.
    tail: Vec<u8>,
}

/// Streaming state. Whole-text masking uses one, fed once and finished.
pub(crate) struct Core {
    /// Context prefix (`ctx` bytes, already released) followed by unreleased text.
    buf: String,
    ctx: usize,
    /// Absolute offset of `buf[ctx]` in the whole input.
    base: usize,
    absorb: Option<Absorb>,
    pub counts: Vec<u64>,
    cache: Option<Cache>,
    cands: Vec<Cand>,
    raw: Vec<(usize, usize)>,
    sel: Vec<usize>,
    /// Prefilter anchors of the current scan, and window scratch space.
    anchors: Anchors,
    win: Vec<(usize, usize)>,
}

impl Core {
    pub(crate) fn new(m: &Masker) -> Core {
        Core {
            buf: String::new(),
            ctx: 0,
            base: 0,
            absorb: None,
            counts: vec![0; m.detectors.len()],
            cache: None,
            cands: Vec::new(),
            raw: Vec::new(),
            sel: Vec::new(),
            anchors: Anchors::default(),
            win: Vec::new(),
        }
    }

    /// Feed text; appends released masked text to `out`.
    pub(crate) fn push(
        &mut self,
        m: &Masker,
        text: &str,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) -> Result<()> {
        let mut hits = hits;
        let mut text = text;
        if let Some(ab) = &mut self.absorb {
            let Absorb {
                state,
                hash,
                len,
                tail,
                maybe,
                ..
            } = ab;
            let fed = state.feed(text.as_bytes(), maybe, |b| {
                if let Some(h) = hash.as_mut() {
                    hmac::Mac::update(h, b);
                }
                *len += b.len();
                tail.extend_from_slice(b);
                if tail.len() > CONTEXT {
                    tail.drain(..tail.len() - CONTEXT);
                }
            });
            match fed {
                Fed::More => {
                    let n = state.maybe;
                    let mut all = std::mem::take(maybe);
                    all.extend_from_slice(text.as_bytes());
                    *maybe = all[all.len() - n..].to_vec();
                    return Ok(());
                }
                Fed::Ended { at, carried_back } => {
                    let carried = if carried_back {
                        std::mem::take(maybe)
                    } else {
                        Vec::new()
                    };
                    self.end_absorb(m, out, hits.as_deref_mut());
                    // Tentative bytes (ASCII '.') go back in front of the rest.
                    self.buf
                        .push_str(std::str::from_utf8(&carried).unwrap_or_default());
                    text = &text[at..];
                }
            }
        }
        self.buf.push_str(text);
        self.process(m, false, out, hits)
    }

    /// Whole input in one go (no hold-back, cannot fail).
    pub(crate) fn push_final(
        &mut self,
        m: &Masker,
        text: &str,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) {
        self.buf.push_str(text);
        // `last = true` never returns an error.
        let _ = self.process(m, true, out, hits);
    }

    /// End of input: release everything.
    pub(crate) fn finish(
        &mut self,
        m: &Masker,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) -> Result<()> {
        let mut hits = hits;
        if let Some(ab) = &mut self.absorb {
            let carried = std::mem::take(&mut ab.maybe);
            self.end_absorb(m, out, hits.as_deref_mut());
            self.buf
                .push_str(std::str::from_utf8(&carried).unwrap_or_default());
        }
        self.process(m, true, out, hits)
    }

    fn end_absorb(&mut self, m: &Masker, out: &mut String, hits: Option<&mut Vec<Hit>>) {
        let ab = self.absorb.take().expect("absorbing");
        let d = &m.detectors[ab.det];
        match ab.hash {
            Some(h) => push_hashed(&d.tag, h, out),
            None => m.style.render(&d.id, &d.tag, false, "", out),
        }
        self.counts[ab.det] += 1;
        if let Some(hits) = hits {
            hits.push(Hit {
                det: ab.det,
                start: ab.start,
                end: ab.start + ab.len,
            });
        }
        self.buf.clear();
        self.buf
            .push_str(std::str::from_utf8(&ab.tail).unwrap_or_default());
        self.ctx = self.buf.len();
        self.base = ab.start + ab.len;
    }

    fn scan(&mut self, m: &Masker) {
        self.cands.clear();
        self.raw.clear();
        let hay = self.buf.as_str();
        if m.anchored {
            self.anchors.scan(hay.as_bytes(), self.ctx);
        }
        for (di, d) in m.detectors.iter().enumerate() {
            let (raw, cands) = (&mut self.raw, &mut self.cands);
            d.find_each(hay, self.ctx, &self.anchors, &mut self.win, |s, e| {
                raw.push((s, e));
                let Some(end) = d.validator.check(hay, s, e) else {
                    return;
                };
                let run = d.run.map(|kind| {
                    let mut st = RunState::new(kind);
                    match st.feed(&hay.as_bytes()[end..], &[], |_| {}) {
                        Fed::Ended { at, .. } => (end + at, false, None),
                        Fed::More => (hay.len() - st.maybe, true, Some(st)),
                    }
                });
                match run {
                    Some((e, open, st)) => cands.push(Cand {
                        det: di,
                        start: s,
                        end: e,
                        run: Some((open, st)),
                    }),
                    None => cands.push(Cand {
                        det: di,
                        start: s,
                        end,
                        run: None,
                    }),
                }
            });
        }
        self.cands
            .sort_by_key(|c| (c.start, c.run.is_none(), std::cmp::Reverse(c.end), c.det));
        self.sel.clear();
        let mut last_end = 0;
        for (i, c) in self.cands.iter().enumerate() {
            if c.start >= last_end || self.sel.is_empty() {
                self.sel.push(i);
                last_end = c.end;
            }
        }
    }

    /// Earliest char boundary in `[from, len)` where an entity could still be in progress.
    fn unsettled_from(&mut self, dfa: &DFA, from: usize) -> usize {
        let hay = self.buf.as_bytes();
        let len = hay.len();
        let cache = self.cache.get_or_insert_with(|| dfa.create_cache());
        'starts: for p in from..len {
            if !self.buf.is_char_boundary(p) {
                continue;
            }
            let input = Input::new(hay).range(p..).anchored(Anchored::Yes);
            let Ok(mut sid) = dfa.start_state_forward(cache, &input) else {
                return p;
            };
            for (i, &b) in hay[p..].iter().enumerate() {
                let Ok(next) = dfa.next_state(cache, sid, b) else {
                    return p;
                };
                sid = next;
                if sid.is_quit() {
                    return p;
                }
                if sid.is_dead() {
                    if i == 0 || p + i + 1 + MARGIN <= len {
                        continue 'starts;
                    }
                    return p;
                }
            }
            return p;
        }
        len
    }

    fn process(
        &mut self,
        m: &Masker,
        last: bool,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) -> Result<()> {
        let mut hits = hits;
        loop {
            let len = self.buf.len();
            if len == self.ctx {
                return Ok(());
            }
            let limit = if last {
                len
            } else {
                let mut from = len.saturating_sub(HOLD_BACK).max(self.ctx);
                while !self.buf.is_char_boundary(from) {
                    from -= 1;
                }
                self.unsettled_from(&m.probe, from)
            };
            if limit <= self.ctx {
                return Ok(());
            }
            self.scan(m);
            let first_run = self.sel.iter().copied().find(|&i| {
                let c = &self.cands[i];
                c.run.is_some() && c.start < limit
            });
            if let Some(ri) = first_run {
                let c = self.cands[ri].clone();
                self.emit(m, c.start, out, hits.as_deref_mut());
                let d = &m.detectors[c.det];
                let (open, st) = c.run.expect("run");
                if open && !last {
                    let st = st.expect("open run state");
                    let body_end = len - st.maybe;
                    let mut hash = m.style.hasher(&d.id);
                    if let Some(h) = hash.as_mut() {
                        hmac::Mac::update(h, &self.buf.as_bytes()[c.start..body_end]);
                    }
                    self.absorb = Some(Absorb {
                        det: c.det,
                        state: st,
                        hash,
                        start: self.base + c.start - self.ctx,
                        len: body_end - c.start,
                        maybe: self.buf.as_bytes()[body_end..].to_vec(),
                        tail: self.buf.as_bytes()
                            [body_end.saturating_sub(CONTEXT).max(c.start)..body_end]
                            .to_vec(),
                    });
                    self.buf.clear();
                    self.ctx = 0;
                    return Ok(());
                }
                let value = &self.buf[c.start..c.end];
                m.style.render(&d.id, &d.tag, false, value, out);
                self.counts[c.det] += 1;
                let abs = self.base + c.start - self.ctx;
                if let Some(h) = hits.as_deref_mut() {
                    h.push(Hit {
                        det: c.det,
                        start: abs,
                        end: abs + (c.end - c.start),
                    });
                }
                self.shift(c.end);
                continue;
            }
            let mut r = limit;
            loop {
                let mut moved = false;
                for &(s, e) in self.raw.iter().chain(
                    self.sel
                        .iter()
                        .map(|&i| (self.cands[i].start, self.cands[i].end))
                        .collect::<Vec<_>>()
                        .iter(),
                ) {
                    if s < r && e > r {
                        r = s;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
            if r > self.ctx {
                self.emit(m, r, out, hits.as_deref_mut());
                self.shift(r);
            }
            if !last && self.buf.len() - self.ctx > MAX_PENDING {
                return Err(Error::HoldBackExceeded(MAX_PENDING));
            }
            return Ok(());
        }
    }

    /// Append masked `buf[ctx..upto]` (selected entities inside it replaced) to `out`.
    fn emit(&mut self, m: &Masker, upto: usize, out: &mut String, mut hits: Option<&mut Vec<Hit>>) {
        let mut at = self.ctx;
        for &i in &self.sel {
            let c = &self.cands[i];
            if c.start < at || c.end > upto || c.run.is_some() {
                continue;
            }
            out.push_str(&self.buf[at..c.start]);
            let d = &m.detectors[c.det];
            m.style
                .render(&d.id, &d.tag, d.partial, &self.buf[c.start..c.end], out);
            self.counts[c.det] += 1;
            if let Some(h) = hits.as_deref_mut() {
                let abs = self.base + c.start - self.ctx;
                h.push(Hit {
                    det: c.det,
                    start: abs,
                    end: abs + (c.end - c.start),
                });
            }
            at = c.end;
        }
        out.push_str(&self.buf[at..upto]);
    }

    /// Drop released text before `r`, keeping up to [`CONTEXT`] bytes before it as
    /// look-behind context.
    fn shift(&mut self, r: usize) {
        let mut keep = r.saturating_sub(CONTEXT);
        while !self.buf.is_char_boundary(keep) {
            keep -= 1;
        }
        self.base += r - self.ctx;
        self.buf.drain(..keep);
        self.ctx = r - keep;
    }
}
