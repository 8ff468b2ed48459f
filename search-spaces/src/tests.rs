use super::*;

/// A valid file; the bad inputs below each change one line of it, so the
/// expected line numbers can be read off here.
const GOOD: &str = "\
name: my_opt
category: b
weight_decay_style: decoupled
lr: [1.0e-4, 2.0e-4, 4.0e-4, 8.0e-4, 1.6e-3]
weight_decay: [0.01, 0.02, 0.04, 0.08, 0.16]
extras:
  beta2: { default: 0.999, candidates: [0.99, 0.999] }
";

const ORIGIN: &str = "conf/my_opt.yaml";

/// `GOOD` with line `line` (1-based) replaced.
fn with_line(line: usize, text: &str) -> String {
    let mut lines: Vec<&str> = GOOD.lines().collect();
    lines[line - 1] = text;
    lines.join("\n") + "\n"
}

/// Parses `src` as `ORIGIN`, expecting an error at `line`:`column`, and
/// returns its message (without the location).
fn error_at(src: &str, line: usize, column: usize) -> String {
    let err = parse_optimizer(src, ORIGIN).expect_err("input should be rejected");
    let text = err.to_string();
    let prefix = format!("{ORIGIN}:{line}:{column}: ");
    assert!(
        text.starts_with(&prefix),
        "expected `{prefix}...`, got `{text}`"
    );
    match err {
        SpaceError::Invalid {
            file,
            line: l,
            column: c,
            message,
        } => {
            assert_eq!((file.as_str(), l, c), (ORIGIN, line, column));
            // The location is given once, in front, not repeated in words.
            assert!(!message.contains(" at line "), "{message}");
            message
        }
        other => panic!("expected SpaceError::Invalid, got {other:?}"),
    }
}

#[test]
fn good_file_parses() {
    let space = parse_optimizer(GOOD, ORIGIN).unwrap();
    assert_eq!(space.name, "my_opt");
    assert_eq!(space.category, Category::B);
    assert_eq!(space.weight_decay_style, WeightDecayStyle::Decoupled);
    assert_eq!(space.lr.values(), &[1.0e-4, 2.0e-4, 4.0e-4, 8.0e-4, 1.6e-3]);
    assert_eq!(space.weight_decay.centre(), 0.04);
    let beta2 = &space.extras["beta2"];
    assert_eq!(beta2.default, 0.999);
    assert_eq!(beta2.candidates, [0.99, 0.999]);
}

#[test]
fn builtin_catalog_has_sgd_m_and_adamw() {
    let catalog = Catalog::builtin();
    // Every embedded file, under its stem.
    let files = builtin_files();
    let stems: Vec<&str> = files
        .iter()
        .map(|(origin, _)| {
            let file = origin.rsplit('/').next().unwrap();
            file.strip_suffix(".yaml").unwrap()
        })
        .collect();
    assert_eq!(catalog.optimizer_names().collect::<Vec<_>>(), stems);
    assert!(stems.contains(&"adamw") && stems.contains(&"sgd_m"));

    let sgd = catalog.optimizer("sgd_m").unwrap();
    assert_eq!(sgd.reference.as_deref(), Some("torch.optim.SGD"));
    // timm's `sgd` is Nesterov; its classical momentum is `momentum`.
    assert_eq!(sgd.timm.as_deref(), Some("momentum"));
    assert_eq!(sgd.state_bytes_per_param, Some(4.0));
    let adabound = catalog.optimizer("adabound").unwrap();
    assert_eq!(adabound.timm, None);
    for name in catalog.optimizer_names() {
        let space = catalog.optimizer(name).unwrap();
        assert!(space.reference.is_some(), "{name} names no reference");
        assert!(
            space.state_bytes_per_param.is_some(),
            "{name} has no state size"
        );
    }
    assert_eq!(sgd.category, Category::A);
    assert_eq!(sgd.weight_decay_style, WeightDecayStyle::Coupled);
    assert_eq!(sgd.lr.centre(), 0.1);
    assert_eq!(sgd.weight_decay.centre(), 5.0e-4);
    assert_eq!(
        sgd.default_params(),
        BTreeMap::from([("momentum".to_owned(), 0.9)])
    );

    let adamw = catalog.optimizer("adamw").unwrap();
    assert_eq!(adamw.category, Category::B);
    assert_eq!(adamw.weight_decay_style, WeightDecayStyle::Decoupled);
    assert_eq!(adamw.lr.centre(), 1.0e-3);
    assert_eq!(adamw.weight_decay.centre(), 0.05);
    // torch.optim.AdamW's defaults.
    assert_eq!(
        adamw.default_params(),
        BTreeMap::from([
            ("beta1".to_owned(), 0.9),
            ("beta2".to_owned(), 0.999),
            ("eps".to_owned(), 1.0e-8),
        ])
    );
}

#[test]
fn builtin_grids_are_doubling_steps_and_extras_include_defaults() {
    let catalog = Catalog::builtin();
    for name in catalog.optimizer_names() {
        let space = catalog.optimizer(name).unwrap();
        for grid in [&space.lr, &space.weight_decay] {
            for pair in grid.values().windows(2) {
                assert!((pair[1] / pair[0] - 2.0).abs() < 1e-12, "{name}: {grid:?}");
            }
        }
        for (extra_name, extra) in &space.extras {
            assert!(
                extra.candidates.contains(&extra.default),
                "{name}.{extra_name}"
            );
        }
    }
}

#[test]
fn unknown_optimizer_lists_valid_choices() {
    let catalog = Catalog::builtin();
    let err = catalog.optimizer("no_such_optimizer").unwrap_err();
    let names: Vec<&str> = catalog.optimizer_names().collect();
    assert_eq!(
        err.to_string(),
        format!(
            "unknown optimizer `no_such_optimizer`; valid choices: {}",
            names.join(", ")
        )
    );
}

#[test]
fn a_grid_moved_to_a_new_centre_keeps_its_spacing() {
    let catalog = Catalog::builtin();
    let sgd = catalog.optimizer("sgd_m").unwrap();
    let moved = sgd.with_grid_centres(Some(0.4), None);
    assert_eq!(moved.lr.values(), &[0.1, 0.2, 0.4, 0.8, 1.6]);
    assert_eq!(moved.weight_decay, sgd.weight_decay);
    assert_eq!(moved.extras, sgd.extras);
    let moved = sgd.with_grid_centres(None, Some(1.0e-4));
    assert_eq!(moved.lr, sgd.lr);
    assert_eq!(
        moved.weight_decay.values(),
        &[2.5e-5, 5.0e-5, 1.0e-4, 2.0e-4, 4.0e-4]
    );
    // A centre that is not a power of two away: same ratios between neighbours.
    let adamw = catalog.optimizer("adamw").unwrap();
    let moved = adamw.lr.centred_on(3.0e-4);
    assert_eq!(moved.centre(), 3.0e-4);
    for (new, old) in moved.values().windows(2).zip(adamw.lr.values().windows(2)) {
        let (new_ratio, old_ratio) = (new[1] / new[0], old[1] / old[0]);
        assert!((new_ratio - old_ratio).abs() < 1e-12, "{new:?} vs {old:?}");
    }
    assert_eq!(sgd.with_grid_centres(None, None), *sgd);
}

#[test]
fn grid_index_of_tolerates_rounding_only() {
    let grid = Catalog::builtin().optimizer("adamw").unwrap().lr;
    assert_eq!(grid.index_of(2.5e-4), Some(0));
    assert_eq!(grid.index_of(4.0e-3), Some(4));
    // 1e-3 computed the long way round is off in the last bits.
    let computed = (0.1 + 0.2) / 300.0;
    assert_ne!(computed, 1.0e-3);
    assert_eq!(grid.index_of(computed), Some(2));
    assert_eq!(grid.index_of(1.0e-3 * (1.0 + 1e-13)), Some(2));
    assert_eq!(grid.index_of(1.0e-3 * (1.0 + 1e-9)), None);
    assert_eq!(grid.index_of(1.5e-3), None);
}

#[test]
fn serialized_space_parses_back_unchanged() {
    let adamw = Catalog::builtin().optimizer("adamw").unwrap().clone();
    let yaml = serde_yaml::to_string(&adamw).unwrap();
    assert_eq!(parse_optimizer(&yaml, "adamw.yaml").unwrap(), adamw);
}

#[test]
fn extras_are_optional() {
    let src = GOOD.split("extras:").next().unwrap();
    let space = parse_optimizer(src, ORIGIN).unwrap();
    assert!(space.extras.is_empty());
    assert!(space.default_params().is_empty());
}

#[test]
fn yaml_syntax_error_is_located() {
    let msg = error_at(&with_line(2, "category: b: c"), 2, 12);
    assert!(msg.contains("mapping values are not allowed"), "{msg}");
}

#[test]
fn unknown_top_level_key_is_located_and_lists_fields() {
    let msg = error_at(&with_line(3, "weight_decay_styl: decoupled"), 3, 1);
    assert!(msg.contains("unknown field `weight_decay_styl`"), "{msg}");
    assert!(
        msg.contains("`name`, `category`, `weight_decay_style`, `lr`, `weight_decay`, `extras`"),
        "{msg}"
    );
}

#[test]
fn unknown_extra_key_is_located_and_lists_fields() {
    let src = with_line(7, "  beta2: { default: 0.999, candidate: [0.99] }");
    let msg = error_at(&src, 7, 28);
    assert!(msg.contains("unknown field `candidate`"), "{msg}");
    assert!(msg.contains("expected `default` or `candidates`"), "{msg}");
}

#[test]
fn grid_with_too_few_points_is_located() {
    let src = with_line(5, "weight_decay: [0.01, 0.02, 0.04, 0.08]");
    let msg = error_at(&src, 5, 15);
    assert_eq!(
        msg,
        "weight_decay: grid has 4 values, but exactly 5 are needed"
    );
}

#[test]
fn grid_with_too_many_points_is_located() {
    let src = with_line(4, "lr: [1, 2, 3, 4, 5, 6]");
    let msg = error_at(&src, 4, 5);
    assert_eq!(msg, "lr: grid has 6 values, but exactly 5 are needed");
}

#[test]
fn block_style_grid_is_located_at_its_first_dash() {
    let src = with_line(4, "lr:\n  - 0.1\n  - 0.2");
    let msg = error_at(&src, 5, 3);
    assert_eq!(msg, "lr: grid has 2 values, but exactly 5 are needed");
}

#[test]
fn non_positive_grid_value_is_located_and_named() {
    let src = with_line(4, "lr: [1.0e-4, 2.0e-4, 4.0e-4, 8.0e-4, -1.6e-3]");
    let msg = error_at(&src, 4, 38);
    assert_eq!(msg, "lr[4]: must be a positive number, got -0.0016");

    let src = with_line(5, "weight_decay: [0, 0.02, 0.04, 0.08, 0.16]");
    let msg = error_at(&src, 5, 16);
    assert_eq!(msg, "weight_decay[0]: must be a positive number, got 0");
}

#[test]
fn negative_extra_values_are_located_and_named() {
    let src = with_line(7, "  beta2: { default: -0.999, candidates: [0.99, 0.999] }");
    let msg = error_at(&src, 7, 21);
    assert_eq!(
        msg,
        "extras.beta2.default: must be a number >= 0 (0 switches a flag off), got -0.999"
    );

    let src = with_line(7, "  beta2: { default: 0.999, candidates: [0.99, -1] }");
    let msg = error_at(&src, 7, 47);
    assert_eq!(
        msg,
        "extras.beta2.candidates[1]: must be a number >= 0 (0 switches a flag off), got -1"
    );
}

#[test]
fn a_switch_extra_may_be_off_by_default() {
    let src = with_line(7, "  relative_step: { default: 0, candidates: [0, 1] }");
    let space = parse_optimizer(&src, ORIGIN).unwrap();
    let extra = &space.extras["relative_step"];
    assert_eq!(
        (extra.default, extra.candidates.clone()),
        (0.0, vec![0.0, 1.0])
    );
}

#[test]
fn non_numeric_grid_value_is_located() {
    let src = with_line(4, "lr: [1.0e-4, fast, 4.0e-4, 8.0e-4, 1.6e-3]");
    let msg = error_at(&src, 4, 14);
    assert!(
        msg.starts_with("lr[1]: invalid type: string \"fast\""),
        "{msg}"
    );
    assert!(msg.contains("expected a positive number"), "{msg}");
}

#[test]
fn non_ascending_grid_is_located_at_the_offending_value() {
    let src = with_line(4, "lr: [1.0e-4, 4.0e-4, 2.0e-4, 8.0e-4, 1.6e-3]");
    let msg = error_at(&src, 4, 22);
    assert_eq!(
        msg,
        "lr[2]: grid values must be strictly ascending, but 0.0002 comes after 0.0004"
    );

    // A repeated value is not ascending either.
    let src = with_line(5, "weight_decay: [0.01, 0.02, 0.02, 0.08, 0.16]");
    let msg = error_at(&src, 5, 28);
    assert!(msg.contains("0.02 comes after 0.02"), "{msg}");
}

#[test]
fn name_differing_from_file_stem_is_located() {
    let msg = error_at(&with_line(1, "name: my_optimizer"), 1, 7);
    assert_eq!(
        msg,
        "name: `my_optimizer` differs from the file name; it must equal the file stem `my_opt`"
    );
}

#[test]
fn unknown_category_is_located_and_lists_choices() {
    let msg = error_at(&with_line(2, "category: e"), 2, 11);
    assert_eq!(
        msg,
        "category: unknown value `e`, expected one of: \
         a (fixed learning rate with momentum), b (adaptive learning rate with momentum), \
         c (estimated learning rate with momentum), d (adaptive learning rate without momentum)"
    );
}

#[test]
fn unknown_weight_decay_style_is_located() {
    let msg = error_at(&with_line(3, "weight_decay_style: l2"), 3, 21);
    assert!(msg.starts_with("weight_decay_style: unknown value `l2`"));
    assert!(
        msg.contains("`coupled`") && msg.contains("`decoupled`"),
        "{msg}"
    );
}

#[test]
fn missing_field_is_reported() {
    let src = GOOD.replace("category: b\n", "");
    let msg = error_at(&src, 1, 1);
    assert_eq!(msg, "missing field `category`");
}

#[test]
fn duplicate_keys_are_located() {
    let src = with_line(5, "lr: [1, 2, 3, 4, 5]");
    let msg = error_at(&src, 5, 1);
    assert_eq!(msg, "duplicate field `lr`");

    let src = GOOD.to_owned() + "  beta2: { default: 0.99, candidates: [0.99] }\n";
    let msg = error_at(&src, 8, 3);
    assert_eq!(msg, "extras: duplicate extra `beta2`");
}

#[test]
fn stage_one_parameters_cannot_be_extras() {
    let src = with_line(7, "  lr: { default: 0.1, candidates: [0.1] }");
    let msg = error_at(&src, 7, 3);
    assert_eq!(
        msg,
        "extras: `lr` is searched in stage 1 and cannot be an extra"
    );
}

#[test]
fn empty_candidates_are_located() {
    let src = with_line(7, "  beta2: { default: 0.999, candidates: [] }");
    let msg = error_at(&src, 7, 40);
    assert_eq!(msg, "extras.beta2.candidates: needs at least one candidate");
}

#[test]
fn empty_file_is_reported_at_its_start() {
    // serde_yaml reads an empty document as an empty mapping.
    let msg = error_at("", 1, 1);
    assert_eq!(msg, "missing field `name`");
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("bocb-search-spaces-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn user_dir_merges_over_builtin() {
    let dir = TempDir::new("merge");
    dir.write("optimizers/my_opt.yaml", GOOD);
    // Overrides the built-in sgd_m with a narrower lr grid.
    let sgd = include_str!("../optimizers/sgd_m.yaml").replace(
        "lr: [0.025, 0.05, 0.1, 0.2, 0.4]",
        "lr: [0.0125, 0.025, 0.05, 0.1, 0.2]",
    );
    dir.write("optimizers/sgd_m.yaml", &sgd);
    // Not YAML by extension: ignored.
    dir.write("optimizers/notes.txt", "not a search space");

    let user = Catalog::load_dir(&dir.0).unwrap();
    assert_eq!(
        user.optimizer_names().collect::<Vec<_>>(),
        ["my_opt", "sgd_m"]
    );

    let mut catalog = Catalog::builtin();
    let builtin = Catalog::builtin();
    let mut expected: Vec<&str> = builtin.optimizer_names().collect();
    expected.push("my_opt");
    expected.sort_unstable();
    catalog.merge(user);
    assert_eq!(catalog.optimizer_names().collect::<Vec<_>>(), expected);
    assert_eq!(catalog.optimizer("sgd_m").unwrap().lr.centre(), 0.05);
    assert_eq!(catalog.optimizer("my_opt").unwrap().category, Category::B);
    assert_eq!(
        catalog.optimizer("adamw").unwrap(),
        Catalog::builtin().optimizer("adamw").unwrap()
    );
}

#[test]
fn load_dir_reads_a_flat_dir() {
    let dir = TempDir::new("flat");
    dir.write("my_opt.yaml", GOOD);
    let catalog = Catalog::load_dir(&dir.0).unwrap();
    assert_eq!(catalog.optimizer_names().collect::<Vec<_>>(), ["my_opt"]);
}

#[test]
fn load_dir_reports_the_bad_file_with_its_path() {
    let dir = TempDir::new("bad");
    dir.write(
        "optimizers/adamw.yaml",
        include_str!("../optimizers/adamw.yaml"),
    );
    let bad = dir.write(
        "optimizers/my_opt.yaml",
        &with_line(5, "weight_decay: [0.01, 0.02]"),
    );
    let err = Catalog::load_dir(&dir.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:5:15: weight_decay: grid has 2 values, but exactly 5 are needed",
            bad.display()
        )
    );
}

#[test]
fn load_dir_rejects_empty_and_missing_dirs() {
    let dir = TempDir::new("empty");
    let err = Catalog::load_dir(&dir.0).unwrap_err();
    assert!(matches!(err, SpaceError::NoOptimizers { .. }), "{err}");
    assert!(err.to_string().contains("*.yaml"), "{err}");

    let missing = dir.0.join("nope");
    let err = Catalog::load_dir(&missing).unwrap_err();
    assert!(matches!(err, SpaceError::Io { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn load_optimizer_file_checks_the_stem() {
    let dir = TempDir::new("stem");
    let path = dir.write("renamed.yaml", GOOD);
    let err = load_optimizer_file(&path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:1:7: name: `my_opt` differs", path.display())),
        "{err}"
    );
    let path = dir.write("my_opt.yaml", GOOD);
    assert_eq!(load_optimizer_file(&path).unwrap().name, "my_opt");
}

#[test]
fn state_bytes_must_be_a_finite_non_negative_number() {
    let src = builtin_files()
        .into_iter()
        .find(|(origin, _)| origin.ends_with("/adamw.yaml"))
        .unwrap()
        .1
        .replace("state_bytes_per_param: 8", "state_bytes_per_param: -8");
    let err = parse_optimizer(&src, "adamw.yaml").unwrap_err().to_string();
    assert!(
        err.contains("state_bytes_per_param must be a finite number >= 0")
            && err.contains("adamw.yaml:"),
        "{err}"
    );
}
