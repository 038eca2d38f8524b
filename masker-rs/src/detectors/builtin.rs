//! The built-in detector table. Every pattern has a bounded match length (see
//! [`super::MAX_ENTITY_LEN`]); open-ended entities use a bounded head plus a run automaton.

use super::prefilter::Anchor;
use super::run::RunKind;
use crate::validators::Validator;

/// One row of the table.
pub(crate) struct Builtin {
    pub id: &'static str,
    pub pattern: &'static str,
    pub validator: Validator,
    pub run: Option<RunKind>,
    /// Style `partial` keeps the last four characters.
    pub partial: bool,
    /// What every match contains, for the shared prefilter; `None`: the regex's own literal
    /// prefilter finds the candidates (token prefixes, PEM header).
    pub anchor: Option<Anchor>,
}

const fn row(id: &'static str, pattern: &'static str, validator: Validator) -> Builtin {
    Builtin {
        id,
        pattern,
        validator,
        run: None,
        partial: false,
        anchor: None,
    }
}

/// Built-in detectors, in priority order (earlier wins a tie between equal spans).
pub(crate) const BUILTINS: &[Builtin] = &[
    Builtin {
        run: Some(RunKind::Pem),
        ..row(
            "private_key",
            r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----",
            Validator::None,
        )
    },
    Builtin {
        run: Some(RunKind::Jwt),
        ..row("jwt", r"eyJ[A-Za-z0-9_-]{4,160}\.eyJ", Validator::Token)
    },
    row(
        "anthropic_key",
        r"sk-ant-[a-z]{2,8}[0-9]{2}-[A-Za-z0-9_-]{20,200}",
        Validator::Token,
    ),
    row(
        "openai_key",
        r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}",
        Validator::OpenAi,
    ),
    row(
        "stripe_key",
        r"(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{10,200}",
        Validator::Token,
    ),
    row(
        "aws_access_key",
        // A secret access key right after the key id is masked with it.
        r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}(?-u:\b)(?:[ \t,;:|=]{1,10}[A-Za-z0-9/+]{40}(?-u:\b))?",
        Validator::Token,
    ),
    row(
        "aws_secret_key",
        r#"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)["']?[ \t]{0,3}[:=][ \t]{0,3}["']?[A-Za-z0-9/+]{40}"#,
        Validator::Tail(40),
    ),
    row(
        "url_credentials",
        r#"://[\x21-\x7E&&[^:/@"'<>]]{1,64}:[\x21-\x7E&&[^/@"'<>]]{1,128}@"#,
        Validator::UrlCredentials,
    ),
    row(
        "github_token",
        r"(?:gh[pousr]_[A-Za-z0-9]{36,200}|github_pat_[A-Za-z0-9_]{22,200})",
        Validator::Token,
    ),
    row(
        "slack_token",
        r"xox[abposre]-[A-Za-z0-9-]{10,200}",
        Validator::Token,
    ),
    row("gcp_api_key", r"AIza[0-9A-Za-z_-]{35}", Validator::Token),
    Builtin {
        anchor: Some(Anchor::Email),
        ..row(
            "email",
            // Local part: ASCII up to 64, or with letters of any script up to 24 (RFC 6531).
            r"(?:[A-Za-z0-9._%+-]{1,64}|[\p{L}\p{M}\p{N}._%+-]{1,24})@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,120}[A-Za-z0-9])?\.[A-Za-z]{2,24}",
            Validator::Email,
        )
    },
    Builtin {
        anchor: Some(Anchor::Iban),
        partial: true,
        ..row(
            "iban",
            // Either case: `de89 3704 …` is the same account.
            r"(?-u:\b)[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?",
            Validator::Iban,
        )
    },
    Builtin {
        anchor: Some(Anchor::Card),
        partial: true,
        ..row(
            "credit_card",
            r"(?-u:\b)(?:[0-9]{12,19}|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5}|[0-9]{4}(?:[ -][0-9]{4}){2,3}(?:[ -][0-9]{3})?)(?-u:\b)",
            Validator::Card,
        )
    },
    Builtin {
        anchor: Some(Anchor::Ssn),
        ..row(
            "us_ssn",
            r"(?-u:\b)[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}(?-u:\b)",
            Validator::Ssn,
        )
    },
    Builtin {
        anchor: Some(Anchor::Ssn),
        ..row(
            "us_itin",
            r"(?-u:\b)9[0-9]{2}[- ](?:5[0-9]|6[0-5]|7[0-9]|8[0-8]|9[0-24-9])[- ][0-9]{4}(?-u:\b)",
            Validator::Digits,
        )
    },
    Builtin {
        anchor: Some(Anchor::Phone),
        partial: true,
        ..row(
            "phone",
            // Digit groups with up to 3 separator chars between digits (`(0) `, `) `,
            // ` - `; Unicode spaces and dashes are ASCII in the normalised view, format
            // chars are gone), an optional extension; which of these are numbers:
            // `crate::phone`.
            r"(?:[+(]|(?-u:\b))[0-9](?:[0-9]|[ .\-/()]{1,3}[0-9]){5,19}(?:[ ]?(?:x|ext\.?|#)[ ]?[0-9]{1,5})?(?-u:\b)",
            Validator::Phone,
        )
    },
    Builtin {
        anchor: Some(Anchor::Number),
        ..row(
            "date_of_birth",
            r"(?-u:\b)(?:[0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}|[0-9]{1,2}[-/.][0-9]{1,2}[-/.](?:[0-9]{4}|[0-9]{2}))(?-u:\b)",
            Validator::Context(&[
                "born",
                "birth",
                "dob",
                "d.o.b",
                "geboren",
                "geb.",
                "né ",
                "née",
                "nacido",
                "nacimiento",
                "nascido",
                "nascimento",
                "nato",
                "nata",
                "生年月日",
                "誕生日",
                "जन्म",
            ]),
        )
    },
    Builtin {
        anchor: Some(Anchor::Number),
        ..row(
            "us_passport",
            r"(?-u:\b)[A-Z]?[0-9]{8,9}(?-u:\b)",
            Validator::Context(&[
                "passport",
                "reisepass",
                "passeport",
                "pasaporte",
                "passaporto",
            ]),
        )
    },
    Builtin {
        anchor: Some(Anchor::Number),
        ..row(
            "us_driver_license",
            r"(?-u:\b)[A-Z]{0,2}[0-9]{5,14}(?-u:\b)",
            Validator::Context(&[
                "driver",
                "licen",
                "dl#",
                "dl no",
                "dl:",
                "dln",
                "führerschein",
            ]),
        )
    },
    Builtin {
        anchor: Some(Anchor::Number),
        ..row(
            "us_bank_account",
            r"(?-u:\b)[0-9]{8,17}(?-u:\b)",
            Validator::Context(&[
                "account", "acct", "a/c", "konto", "compte", "cuenta", "conta", "routing", "bank",
            ]),
        )
    },
    Builtin {
        anchor: Some(Anchor::Ipv4),
        ..row(
            "ipv4",
            r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)",
            Validator::Ipv4,
        )
    },
    Builtin {
        anchor: Some(Anchor::Mac),
        ..row(
            "mac",
            r"(?-u:\b)(?:[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?-u:\b)",
            Validator::Mac,
        )
    },
    Builtin {
        anchor: Some(Anchor::Ipv6),
        ..row(
            "ipv6",
            // The dotted-quad tail first: `::ffff:171.255.115.22` is one address.
            r"(?:[0-9A-Fa-f]{1,4}:|::?){1,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4}|:)",
            Validator::Ipv6,
        )
    },
];
