//! `veeps fmt` against `terraform fmt`'s own answers (tests/fmt).

use std::path::Path;
use veeps_lang::fmt::format_source;

#[test]
fn fmt_lays_files_out_as_terraform_fmt_does() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fmt");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".want.hcl") else {
            continue;
        };
        let want = std::fs::read_to_string(e.path()).unwrap();
        let input = std::fs::read_to_string(dir.join(format!("{stem}.in.hcl")))
            .unwrap_or_else(|_| want.clone());
        assert_eq!(format_source(&input).unwrap(), want, "{name}");
        assert_eq!(format_source(&want).unwrap(), want, "{name}: idempotent");
        n += 1;
    }
    assert!(n >= 1, "no answers in {}", dir.display());
}

/// The bundled example is laid out as `terraform fmt` lays it out (checked when it was
/// written), so `veeps fmt` must leave every file of it as it is.
#[test]
fn the_example_is_formatted() {
    fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "hcl") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files = vec![];
    walk(&root, &mut files);
    assert!(files.len() > 5, "{}", root.display());
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        assert_eq!(
            format_source(&src).as_deref(),
            Some(src.as_str()),
            "{}",
            f.display()
        );
    }
}
