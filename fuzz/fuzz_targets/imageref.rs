//! Image reference parsing and normalisation (`src/imageref.rs`).
//!
//! Invariants: a parsed reference prints to a string that parses back to the same
//! reference; its repository, familiar name and default-tagged form are normalisation
//! fixpoints; the NodeImage key and tag derived from it rebuild a pull reference for the
//! same repository, and the `IfNotPresent` checks find the image under its own name.
#![no_main]

use kruised::imageref::{
    ImageReference, image_key_and_tag, pull_reference, repo_digests_contain, repo_tags_contain,
};
use libfuzzer_sys::fuzz_target;

fn parse(input: &str) -> ImageReference {
    ImageReference::parse(input)
        .unwrap_or_else(|error| panic!("{input:?} came from a valid reference but: {error}"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let reference = match ImageReference::parse(input) {
        Ok(reference) => reference,
        Err(error) => {
            // Every message renders, and whatever does not parse has no NodeImage key.
            let _ = error.to_string();
            assert!(image_key_and_tag(input).is_err(), "{input:?}");
            return;
        }
    };

    // parse → to_string → parse round-trips.
    let printed = reference.to_string();
    assert_eq!(
        parse(&printed),
        reference,
        "{input:?} printed as {printed:?}"
    );

    // The repository is a normalised name: no tag, no digest, same domain and path.
    let repository = parse(&reference.repository());
    assert_eq!(repository.domain(), reference.domain(), "{input:?}");
    assert_eq!(repository.path(), reference.path(), "{input:?}");
    assert_eq!((repository.tag(), repository.digest()), (None, None));

    // The familiar name names the same repository, except where distribution/reference's
    // familiar form is itself ambiguous: a Docker Hub namespace that looks like a registry
    // (`docker.io/a_b.c/app` → `a_b.c/app`, `docker.io/localhost/app` → `localhost/app`),
    // or an image ID (`library/<64 hex>` → `<64 hex>`).
    // kruise's NodeImage keys are these familiar names, so kruised keeps them as they are.
    let familiar = reference.familiar_name();
    let ambiguous = reference.domain() == "docker.io"
        && familiar
            .split_once('/')
            .is_some_and(|(first, _)| first.contains('.') || first == "localhost")
        // `docker.io/library/<64 hex>` → `<64 hex>`, which reads as an image ID.
        || (familiar.len() == 64 && familiar.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ambiguous {
        assert_eq!(
            parse(&familiar).repository(),
            reference.repository(),
            "{input:?}"
        );
    }

    // TagNameOnly adds `latest` only when there is neither tag nor digest, and re-parses.
    let tagged = reference.clone().with_default_tag();
    assert!(tagged.tag().is_some() || tagged.digest().is_some());
    if reference.tag().is_some() || reference.digest().is_some() {
        assert_eq!(tagged, reference);
    }
    assert_eq!(parse(&tagged.to_string()), tagged);

    // The NodeImage key and tag: the familiar name, and the digest, else the tag, else latest.
    let (key, tag) = image_key_and_tag(input).expect("a valid reference has a key and tag");
    assert_eq!(key, familiar);
    let expected_tag = reference
        .digest()
        .or(reference.tag())
        .unwrap_or(kruised::imageref::DEFAULT_TAG);
    assert_eq!(tag, expected_tag);
    // The key is already normalised: deriving again changes nothing (but for the
    // ambiguous familiar names above, e.g. `docker.io/docker.io/app` → `docker.io/app`).
    if !ambiguous {
        assert_eq!(image_key_and_tag(&key).map(|(k, _)| k), Ok(key.clone()));
    }

    // The agent can always pull what the manager wrote, from the same repository.
    let pull = pull_reference(&key, &tag)
        .unwrap_or_else(|error| panic!("{input:?}: key {key:?} tag {tag:?}: {error}"));
    let pulled = parse(&pull);
    if !ambiguous {
        assert_eq!(
            pulled.repository(),
            reference.repository(),
            "{input:?} → {pull:?}"
        );
    }

    // IfNotPresent: the runtime reporting this very image makes the check true (for an
    // ambiguous familiar name the key re-normalises elsewhere, see above).
    match reference.digest() {
        Some(digest) => {
            let repo_digests = vec![format!("{}@{digest}", reference.repository())];
            assert!(
                ambiguous || repo_digests_contain(&repo_digests, &key, digest),
                "{input:?}"
            );
            assert!(!repo_tags_contain(&[printed.clone()], &key, digest));
        }
        None => {
            let repo_tags = vec![tagged.to_string()];
            assert!(
                ambiguous || repo_tags_contain(&repo_tags, &key, &tag),
                "{input:?}"
            );
        }
    }
});
