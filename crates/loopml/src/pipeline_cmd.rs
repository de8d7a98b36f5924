//! `loopml pipeline …`: run a pipeline file locally (tracked on a loopml server), check it,
//! export it as an Argo Workflow, or run one step alone (what the Argo containers do).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

/// Exit status of a run whose gate rejected the challenger (nothing promoted, nothing broken).
pub const EXIT_REJECTED: i32 = 3;

/// Pipeline subcommands.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Run the pipeline's DAG here: steps in parallel, logs streamed, unchanged steps skipped
    /// (step cache), every step tracked as a child run. Exit status: 0 succeeded, 1 failed,
    /// 3 the gate rejected the challenger, 2 the file or options are wrong.
    Run {
        /// The pipeline file (YAML)
        file: PathBuf,
        /// Override a param: NAME=VALUE (repeatable)
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Steps that may run at once [default: the number of cores]
        #[arg(long)]
        jobs: Option<usize>,
        /// Run every step, even those whose inputs are unchanged
        #[arg(long)]
        no_cache: bool,
        /// Track nothing (register, gate and promote steps then fail)
        #[arg(long)]
        no_track: bool,
        /// Print the run report as JSON at the end
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
    /// Check a pipeline file (names, kinds, needs, cycles, references, timeouts) and print its
    /// steps in order.
    Check {
        /// The pipeline file
        file: PathBuf,
    },
    /// Write the pipeline as an Argo Workflows manifest (YAML).
    Export {
        /// The pipeline file
        file: PathBuf,
        /// Argo Workflows (the only format so far)
        #[arg(long)]
        argo: bool,
        /// Where to write it [default: stdout]
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Image of command steps
        #[arg(long, default_value = "python:3.12-slim")]
        image: String,
        /// Image with the loopml binary, for built-in steps
        #[arg(long, default_value = "loopml:latest")]
        loopml_image: String,
        /// Working directory in the containers (where the pipeline's files are)
        #[arg(long, default_value = "/work")]
        workdir: String,
        /// MLFLOW_TRACKING_URI of the containers (a loopml server the cluster reaches)
        #[arg(long)]
        tracking_uri: Option<String>,
    },
    /// Run one step alone, without the cache or a parent run (used by exported workflows).
    Step {
        /// The pipeline file
        file: PathBuf,
        /// The step
        #[arg(long)]
        step: String,
        /// Override a param: NAME=VALUE (repeatable)
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// An upstream step's output: STEP.KEY=VALUE (repeatable)
        #[arg(long = "output", value_name = "STEP.KEY=VALUE")]
        outputs: Vec<String>,
        /// Write the step's outputs here, one file per key
        #[arg(long)]
        outputs_dir: Option<PathBuf>,
        #[command(flatten)]
        server: crate::ServerUrl,
    },
}

fn parse_params(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--param `{p}` is not NAME=VALUE"))
        })
        .collect()
}

fn load(file: &std::path::Path) -> anyhow::Result<loopml_pipelines::Pipeline> {
    loopml_pipelines::Pipeline::load(file).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Prints `[step] line` as lines arrive.
fn printer() -> loopml_pipelines::LogSink {
    std::sync::Arc::new(|step: &str, line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{step}] {line}");
        let _ = out.flush();
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs a pipeline subcommand; returns the process exit code.
pub fn run(cmd: PipelineCommand) -> anyhow::Result<i32> {
    match cmd {
        PipelineCommand::Run {
            file,
            params,
            jobs,
            no_cache,
            no_track,
            json,
            server,
        } => {
            let pipeline = load(&file)?;
            let mut opts = loopml_pipelines::RunOptions {
                tracking_uri: (!no_track).then(|| loopml::client::server_url(server.server)),
                params: parse_params(&params)?,
                no_cache,
                log: printer(),
                ..Default::default()
            };
            if let Some(j) = jobs {
                opts.jobs = j.max(1);
            }
            let report = runtime()?
                .block_on(loopml_pipelines::run(&pipeline, &opts))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut out = format!(
                "\npipeline {}: {:?} in {:.1} s{}\n",
                report.pipeline,
                report.outcome,
                report.seconds,
                report
                    .run_id
                    .as_ref()
                    .map(|r| format!(" (run {r})"))
                    .unwrap_or_default()
            );
            for s in &report.steps {
                out.push_str(&format!(
                    "  {:<20} {:<10} {:>7.1} s  {}\n",
                    s.name,
                    format!("{:?}", s.status).to_uppercase(),
                    s.seconds,
                    s.message.as_deref().unwrap_or("")
                ));
            }
            if json {
                out.push_str(&serde_json::to_string_pretty(&report)?);
                out.push('\n');
            }
            loopml::client::print_out(&out)?;
            Ok(match report.outcome {
                loopml_pipelines::Outcome::Succeeded => 0,
                loopml_pipelines::Outcome::Rejected => EXIT_REJECTED,
                _ => 1,
            })
        }
        PipelineCommand::Check { file } => {
            let p = load(&file)?;
            let mut out = format!(
                "pipeline {} (experiment {}): {} steps\n",
                p.name,
                p.experiment,
                p.steps.len()
            );
            for s in &p.steps {
                out.push_str(&format!(
                    "  {:<20} {:<9} needs [{}]\n",
                    s.name,
                    format!("{:?}", s.kind.kind()).to_lowercase(),
                    s.needs.join(", ")
                ));
            }
            loopml::client::print_out(&out)?;
            Ok(0)
        }
        PipelineCommand::Export {
            file,
            argo,
            output,
            image,
            loopml_image,
            workdir,
            tracking_uri,
        } => {
            if !argo {
                anyhow::bail!("say which format: --argo (Argo Workflows)");
            }
            let p = load(&file)?;
            let opts = loopml_pipelines::ArgoOptions {
                image,
                loopml_image,
                workdir,
                tracking_uri,
                pipeline_file: None,
            };
            let yaml =
                loopml_pipelines::export_argo(&p, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
            match output {
                Some(path) => loopml::write_file(&path, yaml.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => loopml::client::print_out(&yaml)?,
            }
            Ok(0)
        }
        PipelineCommand::Step {
            file,
            step,
            params,
            outputs,
            outputs_dir,
            server,
        } => {
            let p = load(&file)?;
            let mut upstream = BTreeMap::new();
            for o in &outputs {
                loopml_pipelines::parse_output_arg(o, &mut upstream)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let opts = loopml_pipelines::RunOptions {
                tracking_uri: Some(loopml::client::server_url(server.server)),
                params: parse_params(&params)?,
                log: printer(),
                ..Default::default()
            };
            let report = runtime()?
                .block_on(loopml_pipelines::run_step(&p, &step, &opts, &upstream))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(dir) = outputs_dir {
                loopml_pipelines::write_outputs(&dir, &report.outputs)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            loopml::client::print_out(&format!(
                "step {}: {:?} {}\n",
                report.name,
                report.status,
                report.message.as_deref().unwrap_or("")
            ))?;
            Ok(match report.status {
                loopml_pipelines::StepStatus::Succeeded | loopml_pipelines::StepStatus::Cached => 0,
                loopml_pipelines::StepStatus::Rejected => EXIT_REJECTED,
                _ => 1,
            })
        }
    }
}
