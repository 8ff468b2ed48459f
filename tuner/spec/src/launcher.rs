//! How the service submits workers to a cluster's scheduler: the
//! `slurm: { ... }` block of a launcher file (`bocb serve --launcher FILE`)
//! and of an experiment's `launcher:`. Only the settings live here, so that
//! a build without training reads experiments that carry them; the service
//! runs `sbatch`.

use serde::{Deserialize, Serialize};

/// `launcher: { slurm: { ... } }` in an experiment, or a launcher file's whole text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launcher {
    pub slurm: SlurmConfig,
}

/// How workers are submitted to Slurm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// `--partition`; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--gres`, as `gpu:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// `--time`, as `24:00:00` (a worker is signalled `signal_before_s` before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<u32>,
    /// `--mem`, as `64G`.
    #[serde(
        default,
        deserialize_with = "text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub mem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Worker jobs at once of the experiments this config serves: the
    /// service's experiments without their own `launcher:` share the
    /// service's; an experiment's own caps its jobs alone.
    #[serde(default = "default_max_jobs")]
    pub max_jobs: usize,
    /// More `sbatch` options, each as `--name=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
    /// Seconds before the time limit that the worker hears USR1, saves
    /// its trial's checkpoint and exits (`--signal=B:USR1@N`).
    #[serde(default = "default_signal_before_s")]
    pub signal_before_s: u32,
    /// A worker exits when the service has had no trial for it this long.
    #[serde(default = "default_idle_exit_s")]
    pub idle_exit_s: u32,
    /// The URL workers reach the service at (default: the one it listens
    /// on, which must then be reachable from the compute nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The workers' `--device` (default `auto`: the GPU Slurm gave the job
    /// through `CUDA_VISIBLE_DEVICES`, else the CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The `bocb` the worker jobs run, as the compute nodes see it
    /// (default: the service's own program). A service built without
    /// training names a default build here: it cannot train itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_program: Option<std::path::PathBuf>,
}

fn default_max_jobs() -> usize {
    4
}
fn default_signal_before_s() -> u32 {
    120
}
fn default_idle_exit_s() -> u32 {
    60
}

/// `mem: 64G` and `mem: 4096` (megabytes, as Slurm reads a bare number).
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mem {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Mem>::deserialize(d)?.map(|m| match m {
        Mem::Text(t) => t,
        Mem::Number(n) => n.to_string(),
    }))
}

/// Options bocb passes to sbatch itself.
pub const MANAGED_OPTIONS: &[&str] = &[
    "--array",
    "--job-name",
    "--output",
    "--error",
    "--requeue",
    "--no-requeue",
    "--open-mode",
    "--signal",
    "--parsable",
];

/// A field of a `slurm:` block that Slurm would refuse or bocb cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadSlurmField {
    /// The field's key, as written (`max_jobs`, `extra`).
    pub key: &'static str,
    /// The value as written, where the message is about one.
    pub value: String,
    pub message: String,
}

impl SlurmConfig {
    /// What serde cannot check: counts of at least 1, one-word values,
    /// `extra` entries that are single options bocb does not set itself.
    pub fn check(&self) -> Result<(), BadSlurmField> {
        let bad = |key, value: &str, message: String| BadSlurmField {
            key,
            value: value.to_string(),
            message,
        };
        if self.max_jobs == 0 {
            return Err(bad(
                "max_jobs",
                "0",
                "slurm.max_jobs must be at least 1: it is how many worker jobs may exist at once"
                    .to_string(),
            ));
        }
        if self.idle_exit_s == 0 {
            return Err(bad(
                "idle_exit_s",
                "0",
                "slurm.idle_exit_s must be at least 1 second: workers would exit between two trials".to_string(),
            ));
        }
        for (i, option) in self.extra.iter().enumerate() {
            if !option.starts_with("--") || option.contains(char::is_whitespace) {
                return Err(bad(
                    "extra",
                    option,
                    format!("slurm.extra[{i}] `{option}` is not one sbatch option: write each as `--name=value`, as in `--constraint=a100`"),
                ));
            }
            let name = option.split('=').next().unwrap_or(option);
            if MANAGED_OPTIONS.contains(&name) {
                return Err(bad(
                    "extra",
                    option,
                    format!("slurm.extra[{i}] `{option}`: bocb sets {name} itself; remove it from extra"),
                ));
            }
        }
        for (key, value) in [
            ("partition", &self.partition),
            ("gres", &self.gres),
            ("time", &self.time),
            ("mem", &self.mem),
            ("account", &self.account),
            ("qos", &self.qos),
            ("device", &self.device),
        ] {
            if let Some(value) = value
                .as_deref()
                .filter(|v| v.is_empty() || v.contains(char::is_whitespace))
            {
                return Err(bad(
                    key,
                    value,
                    format!("slurm.{key} must be one word without spaces (leave it out for the cluster's default)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SlurmConfig, String> {
        let launcher: Launcher = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        launcher.slurm.check().map_err(|e| e.to_string())?;
        Ok(launcher.slurm)
    }

    #[test]
    fn the_issues_example_reads_and_bad_fields_are_named() {
        let config = parse(
            "slurm: { partition: gpu, gres: \"gpu:1\", time: \"24:00:00\", cpus_per_task: 8, mem: 64G, account: lab, qos: normal, max_jobs: 16, extra: [\"--constraint=a100\"] }",
        )
        .unwrap();
        assert_eq!(config.partition.as_deref(), Some("gpu"));
        assert_eq!(config.mem.as_deref(), Some("64G"));
        assert_eq!(config.max_jobs, 16);
        assert_eq!(config.signal_before_s, 120);
        assert_eq!(config.idle_exit_s, 60);
        assert_eq!(
            parse("slurm: { mem: 4096 }").unwrap().mem.as_deref(),
            Some("4096")
        );

        let error = |text: &str| parse(text).unwrap_err();
        let unknown = error("slurm: { partitio: gpu }");
        assert!(unknown.contains("unknown field `partitio`"), "{unknown}");
        assert!(
            unknown.contains("`partition`"),
            "the valid fields: {unknown}"
        );
        assert!(error("slurm: { max_jobs: 0 }").contains("slurm.max_jobs"));
        assert!(error("slurm: { idle_exit_s: 0 }").contains("slurm.idle_exit_s"));
        assert!(error("slurm: { extra: [\"-C a100\"] }").contains("slurm.extra[0]"));
        assert!(error("slurm: { extra: [\"--array=0-3\"] }").contains("bocb sets --array"));
        assert!(error("slurm: { gres: \"gpu 1\" }").contains("slurm.gres"));
        assert!(error("local: {}").contains("slurm"));
    }

    #[test]
    fn a_bad_field_names_its_key_and_value() {
        let config: Launcher =
            serde_yaml::from_str("slurm: { extra: [\"--constraint=a100\", \"--signal=USR2\"] }")
                .unwrap();
        let bad = config.slurm.check().unwrap_err();
        assert_eq!((bad.key, bad.value.as_str()), ("extra", "--signal=USR2"));
        assert!(bad.message.starts_with("slurm.extra[1]"), "{bad}");
    }

    #[test]
    fn a_config_round_trips_through_serde() {
        let config: Launcher =
            serde_yaml::from_str("slurm: { gres: \"gpu:1\", mem: 4096, max_jobs: 2 }").unwrap();
        let text = serde_yaml::to_string(&config).unwrap();
        assert!(
            !text.contains("partition"),
            "absent fields stay absent: {text}"
        );
        assert_eq!(serde_yaml::from_str::<Launcher>(&text).unwrap(), config);
    }
}
