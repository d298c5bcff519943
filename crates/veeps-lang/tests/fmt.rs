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

/// The corpus mangled as `tests/fmt/corpus/mangle.py` mangles it.
fn mangle(s: &str) -> String {
    let m = s
        .split('\n')
        .map(|l| l.trim_start_matches([' ', '\t']))
        .collect::<Vec<_>>()
        .join("\n");
    let m = m
        .replace(" = ", "=")
        .replace(", ", ",")
        .replace("{ ", "{")
        .replace(" }", "}");
    regex::Regex::new("  +#")
        .unwrap()
        .replace_all(&m, " #")
        .into_owned()
}

/// Real-world modules (`tests/fmt/corpus`): each file as published is `terraform fmt`'s
/// layout and stays so; mangled, it comes back as `terraform fmt` makes it.
#[test]
fn fmt_agrees_with_terraform_on_real_modules() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fmt/corpus");
    let (mut n, mut wrong) = (0, vec![]);
    for module in std::fs::read_dir(&dir).unwrap().flatten() {
        if !module.path().is_dir() {
            continue;
        }
        for e in std::fs::read_dir(module.path()).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "tf") {
                continue;
            }
            n += 1;
            let src = std::fs::read_to_string(&p).unwrap();
            let name = p.strip_prefix(&dir).unwrap().display().to_string();
            if format_source(&src).as_deref() != Some(src.as_str()) {
                wrong.push(format!("{name}: changed, though terraform fmt leaves it"));
            }
            let mangled = mangle(&src);
            let want = std::fs::read_to_string(p.with_extension("tf.want")).unwrap_or(src);
            if format_source(&mangled).as_deref() != Some(want.as_str()) {
                wrong.push(format!(
                    "{name}: mangled, it does not come back as terraform fmt's"
                ));
            }
        }
    }
    assert!(n > 150, "{n} files in {}", dir.display());
    assert!(
        wrong.is_empty(),
        "{} of {n}:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Whatever the text, `veeps fmt` answers or declines; it never panics, and what it
/// answers still parses and is its own answer.
#[test]
fn fmt_survives_cut_and_spliced_input() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fmt/corpus/terraform-aws-vpc");
    let src = std::fs::read_to_string(dir.join("variables.tf")).unwrap();
    let src: String = src.chars().take(6000).collect();
    let inserts = [
        "\"", "${", "%{", "~}", "<<EOT\n", "<<-", "\\", "é", "/*", "#", "{", "}", "\r\n", "\t",
        "=", "...",
    ];
    let cuts: Vec<usize> = src.char_indices().map(|(i, _)| i).step_by(13).collect();
    for (n, &at) in cuts.iter().enumerate() {
        for text in [
            src[..at].to_string(),
            format!("{}{}{}", &src[..at], inserts[n % inserts.len()], &src[at..]),
        ] {
            if let Some(out) = format_source(&text) {
                assert_eq!(
                    format_source(&out).as_deref(),
                    Some(out.as_str()),
                    "not stable on:\n{text}"
                );
            }
        }
    }
}
