//! Open-ended entities (`jwt`, `private_key`): a bounded regex finds the head, then a small
//! byte automaton extends the entity for as long as it continues. The automaton is resumable,
//! so a stream can swallow a 3 KB PEM block without holding it: see `docs/masking.md`.

/// Which automaton extends the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunKind {
    /// `eyJ<header>.eyJ` head; then payload chars, an optional `.` and signature chars.
    Jwt,
    /// `-----BEGIN ... PRIVATE KEY-----` head; then base64/header-line chars up to and
    /// including the `-----END ...-----` line.
    Pem,
}

/// Result of feeding one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The byte is part of the entity.
    Take,
    /// The byte may be part of the entity, decided by the next byte (a JWT's `.`).
    Maybe,
    /// The entity ended before this byte (and before any `Maybe` bytes).
    EndBefore,
    /// The byte is the entity's last.
    EndAfter,
}

fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Base64, header-line and line-break bytes; `\` too, so a key whose line breaks are written
/// as `\n` escapes (JSON inside text) is swallowed whole.
fn pem_body(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'+' | b'/' | b'=' | b':' | b',' | b'-' | b' ' | b'\t' | b'\r' | b'\n' | b'\\'
        )
}

/// Resumable state of one open-ended entity.
#[derive(Debug, Clone)]
pub(crate) struct RunState {
    kind: RunKind,
    /// Jwt: 0 payload, 1 after `.` (maybe), 2 signature. Pem: 0 body, 1 inside the END line.
    phase: u8,
    /// Pem: last eight bytes (to spot `-----END`) or the run of `-` inside the END line.
    window: u64,
    /// Bytes taken tentatively (`Maybe`), not yet part of the entity.
    pub(crate) maybe: usize,
}

/// What [`RunState::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fed {
    /// Every byte was taken (some perhaps tentatively, see `maybe`).
    More,
    /// The entity ends at offset `at` of the fed slice (exclusive); `carried_back`: the
    /// tentative bytes from the previous feed are not part of it either.
    Ended {
        /// End offset within the fed slice.
        at: usize,
        /// The previous feed's tentative bytes belong after the entity.
        carried_back: bool,
    },
}

const END_MARK: u64 = u64::from_be_bytes(*b"-----END");

impl RunState {
    pub(crate) fn new(kind: RunKind) -> Self {
        RunState {
            kind,
            phase: 0,
            window: 0,
            maybe: 0,
        }
    }

    fn step(&mut self, b: u8) -> Step {
        match self.kind {
            RunKind::Jwt => match (self.phase, b) {
                (0, b'.') => {
                    self.phase = 1;
                    Step::Maybe
                }
                (0 | 2, b) if b64url(b) => Step::Take,
                (1, b) if b64url(b) => {
                    self.phase = 2;
                    Step::Take
                }
                _ => Step::EndBefore,
            },
            RunKind::Pem => {
                if self.phase == 0 {
                    if !pem_body(b) {
                        return Step::EndBefore;
                    }
                    self.window = (self.window << 8) | u64::from(b);
                    if self.window == END_MARK {
                        self.phase = 1;
                        self.window = 0;
                    }
                    Step::Take
                } else if b == b'-' {
                    self.window += 1;
                    if self.window == 5 {
                        Step::EndAfter
                    } else {
                        Step::Take
                    }
                } else if b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' {
                    self.window = 0;
                    Step::Take
                } else {
                    Step::EndBefore
                }
            }
        }
    }

    /// Feed bytes. `take` receives, in order, every run of bytes that became part of the
    /// entity (for hashing). `carried` are tentative bytes left over from the previous feed
    /// (`self.maybe` of them); if the entity ends right after them they are not part of it and
    /// [`Fed::Ended`] reports `carried_back = true`.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        carried: &[u8],
        mut take: impl FnMut(&[u8]),
    ) -> Fed {
        let mut from = 0; // bytes[from..] not yet reported
        let mut maybe_here = false; // tentative bytes lie in this slice, at bytes[from..]
        for (i, &b) in bytes.iter().enumerate() {
            match self.step(b) {
                Step::Take => {
                    if self.maybe > 0 && !maybe_here {
                        take(carried);
                    }
                    self.maybe = 0;
                    maybe_here = false;
                }
                Step::Maybe => {
                    if !maybe_here && self.maybe == 0 {
                        take(&bytes[from..i]);
                        from = i;
                        maybe_here = true;
                    }
                    self.maybe += 1;
                }
                Step::EndBefore => {
                    let carried_back = self.maybe > 0 && !maybe_here;
                    if maybe_here {
                        self.maybe = 0;
                        return Fed::Ended {
                            at: from,
                            carried_back,
                        };
                    }
                    take(&bytes[from..i]);
                    self.maybe = 0;
                    return Fed::Ended {
                        at: i,
                        carried_back,
                    };
                }
                Step::EndAfter => {
                    take(&bytes[from..=i]);
                    self.maybe = 0;
                    return Fed::Ended {
                        at: i + 1,
                        carried_back: false,
                    };
                }
            }
        }
        if !maybe_here && self.maybe == 0 {
            take(&bytes[from..]);
        }
        Fed::More
    }
}
