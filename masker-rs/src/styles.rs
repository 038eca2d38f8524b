//! How a detected value is replaced: `tag`, `partial`, `hash`, `redact`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Keyed HMAC-SHA256 state, keyed once.
pub(crate) type HashState = Hmac<Sha256>;

/// A masking style (`mask_style` in the gateway's rules).
#[derive(Clone)]
pub enum Style {
    /// `[EMAIL]`: the upper-case entity id in brackets (default).
    Tag,
    /// Card, account (IBAN, custom `luhn`/`mod97`) and phone numbers keep their last four
    /// alphanumerics, the others become `*` (separators kept); other entities fall back to tag.
    Partial,
    /// `[EMAIL:3f9a1c2b]`: the first 4 bytes (8 hex digits) of
    /// HMAC-SHA256(key, id || 0x00 || value), so equal values give equal tokens.
    Hash(Box<HashState>),
    /// The value is removed.
    Redact,
}

impl std::fmt::Debug for Style {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str(match self {
            Style::Tag => "Tag",
            Style::Partial => "Partial",
            Style::Hash(_) => "Hash",
            Style::Redact => "Redact",
        })
    }
}

impl Style {
    /// Parse a style name; `hash` needs a non-empty key.
    ///
    /// # Errors
    /// [`Error::UnknownStyle`] or [`Error::MissingHashKey`].
    pub fn parse(name: &str, hash_key: Option<&[u8]>) -> Result<Style> {
        Ok(match name {
            "tag" => Style::Tag,
            "partial" => Style::Partial,
            "redact" => Style::Redact,
            "hash" => {
                let key = hash_key
                    .filter(|k| !k.is_empty())
                    .ok_or(Error::MissingHashKey)?;
                let mac = HashState::new_from_slice(key).map_err(|_| Error::MissingHashKey)?;
                Style::Hash(Box::new(mac))
            }
            other => return Err(Error::UnknownStyle(other.to_owned())),
        })
    }

    /// A fresh hashing state for entity `id`, or `None` for the other styles.
    pub(crate) fn hasher(&self, id: &str) -> Option<HashState> {
        match self {
            Style::Hash(base) => {
                let mut h = (**base).clone();
                h.update(id.as_bytes());
                h.update(&[0]);
                Some(h)
            }
            _ => None,
        }
    }

    /// Append the replacement for `value` (entity `id`, tag `tag`) to `out`.
    pub(crate) fn render(&self, id: &str, tag: &str, partial: bool, value: &str, out: &mut String) {
        match self {
            Style::Redact => {}
            Style::Partial if partial => {
                let keep_from = value
                    .char_indices()
                    .filter(|(_, c)| c.is_ascii_alphanumeric())
                    .map(|(i, _)| i)
                    .rev()
                    .nth(3)
                    .unwrap_or(0);
                for (i, c) in value.char_indices() {
                    out.push(if i < keep_from && c.is_ascii_alphanumeric() {
                        '*'
                    } else {
                        c
                    });
                }
            }
            Style::Tag | Style::Partial => push_tag(tag, out),
            Style::Hash(_) => {
                let mut h = self.hasher(id).expect("hash style");
                h.update(value.as_bytes());
                push_hashed(tag, h, out);
            }
        }
    }
}

fn push_tag(tag: &str, out: &mut String) {
    out.push('[');
    out.push_str(tag);
    out.push(']');
}

/// `[TAG:xxxxxxxx]` from a finished hashing state.
pub(crate) fn push_hashed(tag: &str, h: HashState, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = h.finalize().into_bytes();
    out.push('[');
    out.push_str(tag);
    out.push(':');
    for b in &digest[..4] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out.push(']');
}
