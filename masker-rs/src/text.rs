//! The masking engine shared by whole-text and streaming masking.
//!
//! Whole-text masking is the streaming engine fed once and finished, so the two agree by
//! construction; the property tests check that any cut of the input gives the same output.
//!
//! The engine walks the text in *steps* of at most [`BLOCK`] bytes. Each detector keeps the
//! position where its next search resumes (leftmost-first, non-overlapping, exactly as one
//! pass over the whole text would continue), so no byte is searched twice by a detector and
//! the cost is linear in the input, however many entities it holds. A step:
//! - ends at the first open-ended entity head (`jwt`, `private_key`) that could be selected,
//!   so that head is decided before anything after it is searched;
//! - collects the validated candidates starting in the step, resolves overlaps greedily
//!   (earliest match start, then open-ended entities, then longest, then detector priority; the
//!   end of the last selected entity carries over to the next step) and releases the text.
//!
//! A stream releases only *settled* text: positions where an anchored DFA over all detectors
//! dies before the end of the buffer (less a small margin when some pattern matched from
//! there, for the validators' look-ahead), or more than [`HOLD_BACK`] bytes back. Open-ended
//! entities that started in settled text are swallowed as they arrive (no bytes held) and
//! replaced when they end.

use std::collections::VecDeque;

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::{Anchored, Input};

use crate::detectors::prefilter::Anchors;
use crate::detectors::run::{Fed, RunState};
use crate::detectors::MAX_ENTITY_LEN;
use crate::error::{Error, Result};
use crate::masker::Masker;
use crate::normalize::{Normalizer, OffsetMap};
use crate::styles::{push_hashed, HashState};

/// Upper bound on the streaming hold-back, in bytes: the longest bounded entity
/// ([`MAX_ENTITY_LEN`]) plus the look-ahead the validators use. Typically far less is held:
/// only the tail from the earliest position where an entity could still be in progress.
pub const HOLD_BACK: usize = MAX_ENTITY_LEN + 8;

/// Bytes after an anchored DFA's death that validators may still look at (only held when a
/// pattern matched from that start).
const MARGIN: usize = 4;

/// Look-behind kept before the first position a detector may still start at. Validators and
/// context words look at most this far back (see `docs/masking.md`).
pub(crate) const LOOKBEHIND: usize = 64;

/// Most text one step covers (bounds the work a step can waste and the scratch memory).
const BLOCK: usize = 32 * 1024;

/// Hard cap on unreleased text (view and original), a defensive bound: settled text is
/// released at once and at most [`HOLD_BACK`] view bytes are unsettled (behind them at most
/// ~9.3 KiB of original text), so a stream never gets near it. Past it the stream fails
/// closed ([`Error::HoldBackExceeded`]).
pub const MAX_PENDING: usize = 16 * 1024;

/// One detected entity: detector index and byte span in the original input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub det: usize,
    pub start: usize,
    pub end: usize,
}

/// A validated candidate of the current step; offsets are absolute.
#[derive(Debug, Clone, Copy)]
struct Cand {
    det: usize,
    /// Start of the detector's match: overlaps are resolved by it (it lies before the step's
    /// end even when the entity itself starts later, as a secret after its key name does).
    key: usize,
    start: usize,
    end: usize,
    /// An open-ended entity's head (`end` is the head's end).
    run: bool,
}

/// A raw match an open-ended detector found ahead of the current step (absolute offsets);
/// `ok`: the validated head end.
#[derive(Debug, Clone, Copy)]
struct Raw {
    start: usize,
    end: usize,
    ok: Option<usize>,
}

/// Where a detector's leftmost-first chain of matches continues.
#[derive(Debug, Default, Clone)]
struct Chain {
    /// Absolute offset where its next search begins.
    from: usize,
    /// Open-ended detectors search a whole block ahead: matches found, not yet consumed.
    ahead: VecDeque<Raw>,
    /// End of the last consumed match.
    last_end: usize,
}

/// An open-ended entity being swallowed across pushes.
struct Absorb {
    det: usize,
    state: RunState,
    hash: Option<HashState>,
    /// Absolute start offset (view) and bytes taken so far; `ostart`: start in the original.
    start: usize,
    ostart: usize,
    len: usize,
    /// Tentative bytes (a JWT's trailing `.`) not yet known to be part of it.
    maybe: Vec<u8>,
    /// The last [`LOOKBEHIND`] bytes before the entity's current end (text before it, then
    /// its own bytes): the look-behind for what follows, as whole-text masking sees it.
    tail: String,
}

/// Streaming state. Whole-text masking uses one, fed once and finished.
///
/// Detectors search the normalised *view* of the text (`crate::normalize`); every offset
/// below is in the view, except `odone`, which is in the original text that is emitted.
pub(crate) struct Core {
    /// View from absolute offset `origin` on: look-behind, released text not yet dropped,
    /// then unreleased text.
    buf: String,
    origin: usize,
    /// Absolute offset up to which output was released; `odone`: the same in the original.
    done: usize,
    odone: usize,
    norm: Normalizer,
    map: OffsetMap,
    /// The view of a push while an open-ended entity is swallowed.
    scratch: String,
    /// Absolute end of the last selected entity.
    sel_end: usize,
    chains: Vec<Chain>,
    absorb: Option<Absorb>,
    pub counts: Vec<u64>,
    cache: Option<Cache>,
    cands: Vec<Cand>,
    sel: Vec<usize>,
    /// Prefilter anchors of the current step, and window scratch space.
    anchors: Anchors,
    win: Vec<(usize, usize)>,
}

impl Core {
    pub(crate) fn new(m: &Masker) -> Core {
        Core {
            buf: String::new(),
            origin: 0,
            done: 0,
            odone: 0,
            norm: Normalizer::default(),
            map: OffsetMap::default(),
            scratch: String::new(),
            sel_end: 0,
            chains: vec![Chain::default(); m.detectors.len()],
            absorb: None,
            counts: vec![0; m.detectors.len()],
            cache: None,
            cands: Vec::new(),
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
        self.feed(m, text, false, out, hits)
    }

    /// Normalise `text` (with `last`, the normaliser's pending segment too) and process its
    /// view: swallowed by an open-ended entity in progress, then searched.
    fn feed(
        &mut self,
        m: &Masker,
        text: &str,
        last: bool,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) -> Result<()> {
        let mut hits = hits;
        if self.absorb.is_none() {
            self.norm.push(text, last, &mut self.buf, &mut self.map);
            return self.process(m, false, out, hits);
        }
        let mut view = std::mem::take(&mut self.scratch);
        view.clear();
        self.norm.push(text, last, &mut view, &mut self.map);
        let ab = self.absorb.as_mut().expect("absorbing");
        let Absorb {
            state,
            hash,
            len,
            tail,
            maybe,
            ..
        } = ab;
        let fed = state.feed(view.as_bytes(), maybe, |b| {
            if let Some(h) = hash.as_mut() {
                hmac::Mac::update(h, b);
            }
            *len += b.len();
            // Entity bytes are ASCII (the run automata take nothing else).
            tail.push_str(std::str::from_utf8(b).unwrap_or_default());
            trim_front(tail, LOOKBEHIND);
        });
        match fed {
            Fed::More => {
                let n = state.maybe;
                let mut all = std::mem::take(maybe);
                all.extend_from_slice(view.as_bytes());
                *maybe = all[all.len() - n..].to_vec();
                // Nothing before the entity's current end is looked up again.
                let taken = ab.start + ab.len;
                self.map.prune(taken, usize::MAX);
            }
            Fed::Ended { at, carried_back } => {
                let mut rest = if carried_back {
                    String::from_utf8(std::mem::take(maybe)).unwrap_or_default()
                } else {
                    String::new()
                };
                rest.push_str(&view[at..]);
                let end = ab.start + ab.len;
                let skip = self.map.round_up(end) - end;
                self.end_absorb(m, &rest[..skip], out, hits.as_deref_mut());
                self.buf.push_str(&rest[skip..]);
            }
        }
        self.scratch = view;
        if self.absorb.is_some() {
            return Ok(());
        }
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
        self.norm.push(text, true, &mut self.buf, &mut self.map);
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
        self.feed(m, "", true, out, hits.as_deref_mut())?;
        if let Some(ab) = &mut self.absorb {
            let carried = std::mem::take(&mut ab.maybe);
            self.end_absorb(m, "", out, hits.as_deref_mut());
            self.buf
                .push_str(std::str::from_utf8(&carried).unwrap_or_default());
        }
        self.process(m, true, out, hits)
    }

    /// The swallowed entity ended; `skip`: the rest of the segment it ended in (swallowed
    /// too, not part of its value).
    fn end_absorb(
        &mut self,
        m: &Masker,
        skip: &str,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) {
        let mut ab = self.absorb.take().expect("absorbing");
        let d = &m.detectors[ab.det];
        match ab.hash {
            Some(h) => push_hashed(&d.tag, h, out),
            None => m.style.render(&d.id, &d.tag, false, "", out),
        }
        self.counts[ab.det] += 1;
        let end = ab.start + ab.len + skip.len();
        self.odone = self.map.end(end);
        if let Some(hits) = hits {
            hits.push(Hit {
                det: ab.det,
                start: ab.ostart,
                end: self.odone,
            });
        }
        ab.tail.push_str(skip);
        trim_front(&mut ab.tail, LOOKBEHIND);
        self.buf = ab.tail;
        self.origin = end - self.buf.len();
        self.restart_at(end);
    }

    /// Every chain restarts at `end` (the end of an open-ended entity), as a fresh search
    /// from there would: matches found ahead stay valid unless a match spans `end`.
    fn restart_at(&mut self, end: usize) {
        self.done = end;
        self.sel_end = end;
        for ch in &mut self.chains {
            let spans = ch.last_end > end || ch.ahead.iter().any(|r| r.start < end && r.end > end);
            ch.ahead.retain(|r| r.start >= end);
            if spans {
                // The chain after `end` may differ from the one found: search again.
                ch.ahead.clear();
                ch.from = end;
            } else {
                // No match starts in `[end, from)` beyond those kept: the search frontier
                // stays (a block searched ahead is not searched again).
                ch.from = ch.from.max(end);
            }
            ch.last_end = end;
        }
    }

    fn rel(&self, abs: usize) -> usize {
        abs - self.origin
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
            // Validators look past a match's end; where no pattern matched from `p` at all,
            // nothing starts at `p` and the bytes after the death do not matter.
            let mut matched = false;
            for (i, &b) in hay[p..].iter().enumerate() {
                let Ok(next) = dfa.next_state(cache, sid, b) else {
                    return p;
                };
                sid = next;
                if sid.is_quit() {
                    return p;
                }
                matched |= sid.is_match();
                if sid.is_dead() {
                    if !matched || p + i + 1 + MARGIN <= len {
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
        let end = self.origin + self.buf.len();
        let limit = if last {
            end
        } else {
            // A chain may resume before `done` (a selected entity ended past the last
            // settled position): a match could still start there, so it must be settled too.
            let resume = self
                .chains
                .iter()
                .map(|c| c.from)
                .fold(self.done, usize::min);
            let mut from = self.rel(resume.max(end.saturating_sub(HOLD_BACK)));
            while !self.buf.is_char_boundary(from) {
                from -= 1;
            }
            self.origin + self.unsettled_from(&m.probe, from)
        };
        while self.done < limit {
            let mut w = self.rel((self.done + BLOCK).min(limit));
            while !self.buf.is_char_boundary(w) {
                w += 1;
            }
            let w = self.origin + w;
            let head = self.find_heads(m, w);
            let upto = head.map_or(w, |x| x + 1);
            self.collect(m, upto);
            // The step ends at a head: selected, it is the last selection.
            let run = self
                .sel
                .last()
                .map(|&i| self.cands[i])
                .filter(|c| c.run && Some(c.start) == head);
            if let Some(c) = run {
                self.sel.pop();
                self.emit(m, c.start, out, hits.as_deref_mut());
                if self.run_entity(m, c, last, out, hits.as_deref_mut()) {
                    return Ok(());
                }
            } else {
                let p = upto.max(self.sel_end);
                self.emit(m, p, out, hits.as_deref_mut());
            }
            self.compact();
        }
        if last && self.absorb.is_none() {
            // Format chars dropped at the very end of the view.
            self.copy_to(self.norm.orig_at, out);
        }
        // Unreleased view, and the original behind it (at most ~36 original bytes per view
        // byte, see `crate::normalize`): both capped.
        if !last && (end - self.done > MAX_PENDING || self.norm.orig_at - self.odone > MAX_PENDING)
        {
            return Err(Error::HoldBackExceeded(MAX_PENDING));
        }
        Ok(())
    }

    /// Search the open-ended detectors one block ahead (up to `w`); the first validated head
    /// that starts at or after the last selected entity's end.
    fn find_heads(&mut self, m: &Masker, w: usize) -> Option<usize> {
        let mut first: Option<usize> = None;
        for (di, d) in m.detectors.iter().enumerate() {
            if d.run.is_none() {
                continue;
            }
            let ch = &mut self.chains[di];
            if ch.from < w {
                let (hay, o) = (self.buf.as_str(), self.origin);
                let ahead = &mut ch.ahead;
                let next = d.find_each(
                    hay,
                    ch.from - o,
                    w - o,
                    &self.anchors,
                    &mut self.win,
                    |s, e| {
                        ahead.push_back(Raw {
                            start: o + s,
                            end: o + e,
                            ok: d.check(hay, s, e).map(|(_, e)| o + e),
                        });
                    },
                );
                ch.from = o + next;
            }
            let sel_end = self.sel_end;
            if let Some(r) = ch
                .ahead
                .iter()
                .find(|r| r.ok.is_some() && r.start >= sel_end)
            {
                first = Some(first.map_or(r.start, |f| f.min(r.start)));
            }
        }
        first
    }

    /// Candidates starting before `upto` (absolute), sorted, and the greedy selection.
    fn collect(&mut self, m: &Masker, upto: usize) {
        self.cands.clear();
        let o = self.origin;
        let hay = self.buf.as_str();
        if m.anchored {
            let from = m
                .detectors
                .iter()
                .zip(&self.chains)
                .filter(|(d, _)| d.anchor.is_some())
                .map(|(_, ch)| ch.from)
                .min()
                .unwrap_or(upto);
            let to = (upto - o + MAX_ENTITY_LEN).min(hay.len());
            self.anchors.scan(hay.as_bytes(), from.min(upto) - o, to);
        }
        for (di, d) in m.detectors.iter().enumerate() {
            let ch = &mut self.chains[di];
            let cands = &mut self.cands;
            if d.run.is_some() {
                while ch.ahead.front().is_some_and(|r| r.start < upto) {
                    let r = ch.ahead.pop_front().expect("front");
                    ch.last_end = r.end;
                    if let Some(e) = r.ok {
                        cands.push(Cand {
                            det: di,
                            key: r.start,
                            start: r.start,
                            end: e,
                            run: true,
                        });
                    }
                }
                continue;
            }
            if ch.from >= upto {
                continue;
            }
            let next = d.find_each(
                hay,
                ch.from - o,
                upto - o,
                &self.anchors,
                &mut self.win,
                |s, e| {
                    if let Some((es, end)) = d.check(hay, s, e) {
                        cands.push(Cand {
                            det: di,
                            key: o + s,
                            start: o + es,
                            end: o + end,
                            run: false,
                        });
                    }
                },
            );
            ch.from = o + next;
            ch.last_end = ch.from;
        }
        self.cands
            .sort_by_key(|c| (c.key, !c.run, std::cmp::Reverse(c.end), c.det));
        self.sel.clear();
        for (i, c) in self.cands.iter().enumerate() {
            if c.key >= self.sel_end {
                self.sel.push(i);
                self.sel_end = c.end;
            }
        }
    }

    /// The open-ended entity whose head `c` was selected: replaced if it ends in the buffer
    /// (or the input ends), else swallowed from here on. True when swallowing.
    fn run_entity(
        &mut self,
        m: &Masker,
        c: Cand,
        last: bool,
        out: &mut String,
        hits: Option<&mut Vec<Hit>>,
    ) -> bool {
        // Format chars dropped just before the entity are text before it.
        let ostart = self.map.start(c.start);
        self.copy_to(ostart, out);
        // Not before the end of an entity that ended in the same segment.
        let ostart = ostart.max(self.odone);
        let d = &m.detectors[c.det];
        let mut st = RunState::new(d.run.expect("open-ended"));
        let len = self.buf.len();
        let end = match st.feed(&self.buf.as_bytes()[self.rel(c.end)..], &[], |_| {}) {
            Fed::Ended { at, .. } => c.end + at,
            Fed::More if last => self.origin + len - st.maybe,
            Fed::More => {
                let body_end = len - st.maybe;
                let s = self.rel(c.start);
                let mut hash = m.style.hasher(&d.id);
                if let Some(h) = hash.as_mut() {
                    hmac::Mac::update(h, &self.buf.as_bytes()[s..body_end]);
                }
                let mut tail = self.buf[..body_end].to_owned();
                trim_front(&mut tail, LOOKBEHIND);
                self.absorb = Some(Absorb {
                    det: c.det,
                    state: st,
                    hash,
                    start: c.start,
                    ostart,
                    len: body_end - s,
                    maybe: self.buf.as_bytes()[body_end..].to_vec(),
                    tail,
                });
                self.buf.clear();
                self.origin += len;
                return true;
            }
        };
        let value = &self.buf[self.rel(c.start)..self.rel(end)];
        m.style.render(&d.id, &d.tag, false, value, out);
        self.counts[c.det] += 1;
        // The rest of the segment the entity ends in goes with it.
        let end = self.map.round_up(end);
        self.odone = self.odone.max(self.map.end(end));
        if let Some(h) = hits {
            h.push(Hit {
                det: c.det,
                start: ostart,
                end: self.odone,
            });
        }
        self.restart_at(end);
        false
    }

    /// Append masked `[done, upto)` (selected non-open-ended entities replaced) to `out`.
    fn emit(&mut self, m: &Masker, upto: usize, out: &mut String, mut hits: Option<&mut Vec<Hit>>) {
        let o = self.origin;
        let mut at = self.done;
        for k in 0..self.sel.len() {
            let c = self.cands[self.sel[k]];
            if c.start < at || c.end > upto || c.run {
                continue;
            }
            let ostart = self.map.start(c.start);
            self.copy_to(ostart, out);
            // Not before the end of an entity that ended in the same segment.
            let ostart = ostart.max(self.odone);
            let d = &m.detectors[c.det];
            m.style.render(
                &d.id,
                &d.tag,
                d.partial,
                &self.buf[c.start - o..c.end - o],
                out,
            );
            self.counts[c.det] += 1;
            self.odone = self.odone.max(self.map.end(c.end));
            if let Some(h) = hits.as_deref_mut() {
                h.push(Hit {
                    det: c.det,
                    start: ostart,
                    end: self.odone,
                });
            }
            at = c.end;
        }
        self.copy_to(self.map.release(upto), out);
        self.done = upto;
    }

    /// Append the original text from `odone` to `to`.
    fn copy_to(&mut self, to: usize, out: &mut String) {
        if to > self.odone {
            self.map.copy(self.odone, to, &self.buf, self.origin, out);
            self.odone = to;
        }
    }

    /// Drop text no search or validator will look at again, once that is at least half the
    /// buffer (amortised: each byte is moved a bounded number of times).
    fn compact(&mut self) {
        self.map.prune(self.done, self.odone);
        let mut keep = self.done;
        for ch in &self.chains {
            keep = keep.min(ch.from);
            if let Some(r) = ch.ahead.front() {
                keep = keep.min(r.start);
            }
        }
        let mut keep = self.rel(keep).saturating_sub(LOOKBEHIND);
        if keep < 4096 || keep < self.buf.len() / 2 {
            return;
        }
        while !self.buf.is_char_boundary(keep) {
            keep -= 1;
        }
        self.buf.drain(..keep);
        self.origin += keep;
    }
}

/// Keep at most the last `n` bytes of `s` (cut at a char boundary).
fn trim_front(s: &mut String, n: usize) {
    if s.len() > n {
        let mut cut = s.len() - n;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
}
