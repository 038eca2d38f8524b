//! The context-scored and secret detectors, and look-alikes that must stay.

use masker::{Config, Masker};

fn found(text: &str) -> Vec<(String, String)> {
    let m = Masker::new(&Config {
        entities: vec!["all".into()],
        ..Config::default()
    })
    .unwrap();
    let (_, f) = m.mask_text(text);
    f.iter()
        .map(|f| (f.entity.to_owned(), text[f.start..f.end].to_owned()))
        .collect()
}

fn one(text: &str, entity: &str, value: &str) {
    assert_eq!(
        found(text),
        vec![(entity.to_owned(), value.to_owned())],
        "{text}"
    );
}

#[test]
fn new_entities_are_found() {
    one(
        "clone https://bob:hunter2@git.example.com/x",
        "url_credentials",
        "bob:hunter2",
    );
    one(
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_key",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    one("DOB: 1990-03-15.", "date_of_birth", "1990-03-15");
    one("born on 15/03/1990", "date_of_birth", "15/03/1990");
    one("passport no. 123456789", "us_passport", "123456789");
    one("driver's license D1234567", "us_driver_license", "D1234567");
    one("ITIN 912-70-1234", "us_itin", "912-70-1234");
    one(
        "account number 12345678901",
        "us_bank_account",
        "12345678901",
    );
    one("Maestro 501234567896", "credit_card", "501234567896");
    one("Maestro 630412345674", "credit_card", "630412345674");
    one("Maestro 060412345674", "credit_card", "060412345674");
    // A base64url key with `-`/`_` every few characters has no 16-character segment.
    let key = "sk-proj-MqzB5vhBQ_m-ZU-iFPThOhHFWT8-nuE8wg-eyL0-ZhmAuu1K_iOvU5GCHouIgYCw";
    one(&format!("use {key} now"), "openai_key", key);
}

#[test]
fn access_key_id_and_its_secret_are_masked_together() {
    let text = "AKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    one(text, "aws_access_key", text);
}

#[test]
fn context_words_are_needed_and_bounded() {
    for t in [
        "on 1990-03-15 we shipped",
        "order 123456789",
        "id 12345678901",
        "D1234567",
        // The context word is more than 40 bytes before the number.
        "passport, as said in the long paragraph above...... 123456789",
    ] {
        assert!(found(t).is_empty(), "{t}: {:?}", found(t));
    }
}

#[test]
fn look_alike_negatives_stay() {
    for t in [
        "pip install sk-learn-model-training-helpers",
        "pip install sk-learn-Model2-training-helpers-for-v3",
        "pip install sk-learn-XGBoost-LightGBM-v2-helpers-extra",
        "see logo@2x.png",
        "ISBN 9780306406157",
        "at 1700000000000 ms",
        "user:pass@host without scheme",
    ] {
        assert!(found(t).is_empty(), "{t}: {:?}", found(t));
    }
}

#[test]
fn ipv4_mapped_ipv6_and_lowercase_iban_are_whole() {
    one(
        "from ::ffff:171.255.115.22 today",
        "ipv6",
        "::ffff:171.255.115.22",
    );
    one(
        "pay de89 3704 0044 0532 0130 00 now",
        "iban",
        "de89 3704 0044 0532 0130 00",
    );
}
