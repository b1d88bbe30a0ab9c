//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' own
//! checks (`fuzz/checks.rs`), on stable, so every finding stays fixed. Also runs a few inputs
//! of each kind written here, so the checks are exercised even on an empty corpus.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn replay<T>(target: &str, check: fn(&[u8]) -> T) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            check(&data);
        });
        assert!(
            outcome.is_ok(),
            "{target}: {} fails its check",
            path.display()
        );
        n += 1;
    }
    n
}

#[test]
fn the_datagram_corpus_keeps_every_line_accounted_for() {
    checks::datagram(b"a:1|c\n\n_e{1,1}:a|b\r\n_sc|x|0\nbad\n:1|c");
    assert!(replay("datagram", checks::datagram) > 0);
}

#[test]
fn the_framer_corpus_cuts_its_input_and_nothing_else() {
    checks::framer(b"\x00\x05\x00\x00\x00a:1|c");
    checks::framer(b"\x07a:1|c\nb:2|c\ntail");
    assert!(replay("framer", checks::framer) > 0);
}

#[test]
fn the_pipeline_corpus_writes_json_that_decodes_back() {
    checks::pipeline(b"a:1|c|#x:y\nh:3|h|@0.5\nd:1:2|d\ns:m|s\ng:+1|g\n_e{1,1}:t|x\n_sc|c|1");
    assert!(replay("pipeline", checks::pipeline) > 0);
}

#[test]
fn the_mapper_corpus_compiles_or_is_refused() {
    checks::mapper(b"- name: p\n  prefix: a.\n  mappings:\n    - {match: 'a.*', name: b}\n\0a.x");
    assert!(replay("mapper", checks::mapper) > 0);
}

#[test]
fn the_config_corpus_compiles_or_is_refused_by_name() {
    assert!(checks::config(
        b"statsd_metric_namespace: app\n\0mappings:\n  - match: a.*.c\n    name: x\n\0a.b.c:1|c"
    ));
    assert!(!checks::config(b"max_contexts: [\n\0\0a:1|c"));
    assert!(replay("config", checks::config) > 0);
}

#[test]
fn the_capture_corpus_reads_back_or_is_refused_with_its_offset() {
    let mut file = corestatsd::bench_api::CAPTURE_HEADER.to_vec();
    let record = b"\x08\x01\x10\x05\x1a\x05a:1|c";
    file.extend((record.len() as u32).to_le_bytes());
    file.extend(record);
    file.extend([0; 8]);
    assert!(checks::capture(&file));
    assert!(!checks::capture(&file[..file.len() - 3]));
    assert!(replay("capture", checks::capture) > 0);
}
