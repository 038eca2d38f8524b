//! Mask text from plain Rust: `cargo run -p masker --example mask_text -- "mail bob@example.com"`
//! or pipe text on stdin. Prints the masked text, then the findings on stderr.

use std::io::Read;

use masker::{Config, Masker};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let input = if args.is_empty() {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        args.join(" ")
    };
    let masker = Masker::new(&Config {
        entities: vec!["all".into()],
        ..Config::default()
    })?;
    let (masked, findings) = masker.mask_text(&input);
    println!("{masked}");
    for f in findings {
        eprintln!("{} {}..{}", f.entity, f.start, f.end);
    }
    Ok(())
}
