//! Exporting a pipeline as an Argo Workflows `Workflow`: one DAG task per step, command steps
//! as `sh -c` containers, built-in steps as `loopml pipeline step` containers; params become
//! workflow parameters and `${steps.X.KEY}` references become Argo output parameters passed
//! along the DAG.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::spec::{Pipeline, Step, StepKind};
use crate::template::{self, Piece};
use crate::{Error, Result};

/// Where a step container writes the outputs it publishes, one file per key.
const OUTPUTS_DIR: &str = "/tmp/loopml/outputs";
/// The `LOOPML_STEP_OUTPUTS` file of a command step whose outputs are used downstream.
const OUTPUTS_FILE: &str = "/tmp/loopml/step-outputs";

/// How a pipeline is exported for Argo.
#[derive(Debug, Clone)]
pub struct ArgoOptions {
    /// Image of command steps.
    pub image: String,
    /// Image with the `loopml` binary, for built-in steps.
    pub loopml_image: String,
    /// Working directory of every container (where the pipeline's files are).
    pub workdir: String,
    /// `MLFLOW_TRACKING_URI` of every container (a loopml server reachable from the cluster).
    pub tracking_uri: Option<String>,
    /// The pipeline file's path inside the containers (default: `<workdir>/<file name>`).
    pub pipeline_file: Option<String>,
}

impl Default for ArgoOptions {
    fn default() -> Self {
        Self {
            image: "python:3.12-slim".into(),
            loopml_image: "loopml:latest".into(),
            workdir: "/work".into(),
            tracking_uri: None,
            pipeline_file: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Workflow {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    generate_name: String,
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    entrypoint: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<Parameters>,
    templates: Vec<Template>,
}

#[derive(Serialize)]
struct Parameters {
    parameters: Vec<Parameter>,
}

#[derive(Serialize)]
struct Parameter {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Template {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<Parameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<OutputParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dag: Option<Dag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_deadline_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_strategy: Option<RetryStrategy>,
}

#[derive(Serialize)]
struct OutputParameters {
    parameters: Vec<OutputParameter>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutputParameter {
    name: String,
    value_from: ValueFrom,
}

#[derive(Serialize)]
struct ValueFrom {
    path: String,
}

#[derive(Serialize)]
struct Dag {
    tasks: Vec<Task>,
}

#[derive(Serialize)]
struct Task {
    name: String,
    template: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dependencies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<Parameters>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    image: String,
    command: Vec<String>,
    working_dir: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<EnvVar>,
}

#[derive(Serialize)]
struct EnvVar {
    name: String,
    value: String,
}

#[derive(Serialize)]
struct RetryStrategy {
    limit: u32,
}

/// A Kubernetes-friendly name: lower case, `-` for `_` and `.`.
fn k8s_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .collect();
    n.trim_matches('-').to_string()
}

/// The string fields of a step, for finding `${steps.…}` references.
fn fields(step: &Step) -> Vec<&str> {
    match &step.kind {
        StepKind::Run(r) => vec![r.command.as_str()],
        StepKind::Validate(v) => vec![&v.data, &v.suite],
        StepKind::Register(r) => vec![&r.model, &r.from, &r.artifact],
        StepKind::Gate(g) => vec![&g.model, &g.alias, &g.challenger, &g.metric],
        StepKind::Promote(p) => vec![&p.model, &p.alias, &p.version],
    }
}

/// The (step, key) outputs a step uses: `${steps.…}` references, and the upstream step a
/// built-in step names (its `run_id` or `version`).
fn used_outputs(p: &Pipeline, step: &Step) -> BTreeSet<(String, String)> {
    let mut used = BTreeSet::new();
    for f in fields(step) {
        for piece in template::parse(f).unwrap_or_default() {
            if let Piece::Output { step, key } = piece {
                used.insert((step, key));
            }
        }
    }
    let named = match &step.kind {
        StepKind::Register(r) => Some((&r.from, "run_id")),
        StepKind::Gate(g) => Some((&g.challenger, "version")),
        StepKind::Promote(pr) => Some((&pr.version, "version")),
        _ => None,
    };
    if let Some((name, key)) = named
        && p.step(name).is_some()
    {
        used.insert((name.clone(), key.to_string()));
    }
    used
}

/// Renders a string for Argo: params as workflow parameters, step outputs as this template's
/// input parameters.
fn argo_text(s: &str, names: &HashMap<&str, String>) -> Result<String> {
    let mut out = String::new();
    for piece in template::parse(s).map_err(Error::Export)? {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Param(n) => out.push_str(&format!("{{{{workflow.parameters.{n}}}}}")),
            Piece::Output { step, key } => out.push_str(&format!(
                "{{{{inputs.parameters.{}}}}}",
                input_name(names, &step, &key)
            )),
        }
    }
    Ok(out)
}

fn input_name(names: &HashMap<&str, String>, step: &str, key: &str) -> String {
    let s = names.get(step).cloned().unwrap_or_else(|| k8s_name(step));
    format!("{s}-{key}")
}

/// Writes `p` as an Argo Workflows `Workflow` (YAML).
pub fn export_argo(p: &Pipeline, opts: &ArgoOptions) -> Result<String> {
    let mut names: HashMap<&str, String> = HashMap::new();
    let mut taken: HashMap<String, &str> = HashMap::new();
    for s in &p.steps {
        let n = k8s_name(&s.name);
        if n.is_empty() || n == "main" {
            return Err(Error::Export(format!(
                "step `{}` has no usable Kubernetes name (`{n}`): rename it",
                s.name
            )));
        }
        if let Some(other) = taken.insert(n.clone(), &s.name) {
            return Err(Error::Export(format!(
                "steps `{other}` and `{}` both become `{n}` in Kubernetes: rename one",
                s.name
            )));
        }
        names.insert(&s.name, n);
    }
    let used: Vec<BTreeSet<(String, String)>> =
        p.steps.iter().map(|s| used_outputs(p, s)).collect();
    // Which outputs each step must publish as Argo output parameters.
    let mut published: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for u in &used {
        for (step, key) in u {
            published
                .entry(step.as_str())
                .or_default()
                .insert(key.clone());
        }
    }
    let file = opts.pipeline_file.clone().unwrap_or_else(|| {
        let name = p.file.file_name().map_or_else(
            || "pipeline.yaml".into(),
            |f| f.to_string_lossy().into_owned(),
        );
        format!("{}/{name}", opts.workdir.trim_end_matches('/'))
    });
    let experiment = argo_text(&p.experiment, &names)?;
    let mut tasks = Vec::new();
    let mut templates = Vec::new();
    for (i, s) in p.steps.iter().enumerate() {
        let name = names.get(s.name.as_str()).cloned().unwrap_or_default();
        let inputs: Vec<(String, String)> = used[i]
            .iter()
            .map(|(step, key)| {
                let producer = names.get(step.as_str()).cloned().unwrap_or_default();
                (
                    input_name(&names, step, key),
                    format!("{{{{tasks.{producer}.outputs.parameters.{key}}}}}"),
                )
            })
            .collect();
        tasks.push(Task {
            name: name.clone(),
            template: name.clone(),
            dependencies: s
                .needs
                .iter()
                .map(|n| names.get(n.as_str()).cloned().unwrap_or_default())
                .collect(),
            arguments: (!inputs.is_empty()).then(|| Parameters {
                parameters: inputs
                    .iter()
                    .map(|(n, v)| Parameter {
                        name: n.clone(),
                        value: Some(v.clone()),
                    })
                    .collect(),
            }),
        });
        let outputs: Vec<String> = published
            .get(s.name.as_str())
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        let mut env = Vec::new();
        if let Some(uri) = &opts.tracking_uri {
            env.push(("MLFLOW_TRACKING_URI".to_string(), uri.clone()));
        }
        let (image, command) = match &s.kind {
            StepKind::Run(r) => {
                for (k, v) in &p.env {
                    env.push((k.clone(), argo_text(v, &names)?));
                }
                env.push(("MLFLOW_EXPERIMENT_NAME".into(), experiment.clone()));
                env.push(("LOOPML_PIPELINE".into(), p.name.clone()));
                env.push(("LOOPML_STEP".into(), s.name.clone()));
                for k in p.params.keys() {
                    env.push((
                        format!("LOOPML_PARAM_{}", k.to_ascii_uppercase()),
                        format!("{{{{workflow.parameters.{k}}}}}"),
                    ));
                }
                let command = argo_text(&r.command, &names)?;
                let script = if outputs.is_empty() {
                    env.push(("LOOPML_STEP_OUTPUTS".into(), "/dev/null".into()));
                    command
                } else {
                    env.push(("LOOPML_STEP_OUTPUTS".into(), OUTPUTS_FILE.into()));
                    // Run the command, then split its `key=value` lines into one file per key
                    // for Argo's output parameters.
                    format!(
                        "mkdir -p {OUTPUTS_DIR} && : > \"$LOOPML_STEP_OUTPUTS\" || exit 1\n(\n{command}\n)\nrc=$?\nwhile IFS= read -r line; do case \"$line\" in *=*) printf '%s' \"${{line#*=}}\" > \"{OUTPUTS_DIR}/${{line%%=*}}\";; esac; done < \"$LOOPML_STEP_OUTPUTS\"\nexit $rc"
                    )
                };
                (opts.image.clone(), vec!["sh".into(), "-c".into(), script])
            }
            _ => {
                let mut cmd: Vec<String> = vec![
                    "loopml".into(),
                    "pipeline".into(),
                    "step".into(),
                    file.clone(),
                    "--step".into(),
                    s.name.clone(),
                ];
                for k in p.params.keys() {
                    cmd.push("--param".into());
                    cmd.push(format!("{k}={{{{workflow.parameters.{k}}}}}"));
                }
                for (step, key) in &used[i] {
                    cmd.push("--output".into());
                    cmd.push(format!(
                        "{step}.{key}={{{{inputs.parameters.{}}}}}",
                        input_name(&names, step, key)
                    ));
                }
                cmd.push("--outputs-dir".into());
                cmd.push(OUTPUTS_DIR.into());
                (opts.loopml_image.clone(), cmd)
            }
        };
        templates.push(Template {
            name,
            inputs: (!inputs.is_empty()).then(|| Parameters {
                parameters: inputs
                    .iter()
                    .map(|(n, _)| Parameter {
                        name: n.clone(),
                        value: None,
                    })
                    .collect(),
            }),
            outputs: (!outputs.is_empty()).then(|| OutputParameters {
                parameters: outputs
                    .iter()
                    .map(|k| OutputParameter {
                        name: k.clone(),
                        value_from: ValueFrom {
                            path: format!("{OUTPUTS_DIR}/{k}"),
                        },
                    })
                    .collect(),
            }),
            dag: None,
            container: Some(Container {
                image,
                command,
                working_dir: opts.workdir.clone(),
                env: env
                    .into_iter()
                    .map(|(name, value)| EnvVar { name, value })
                    .collect(),
            }),
            active_deadline_seconds: Some(s.timeout.as_secs_f64().ceil() as u64),
            retry_strategy: (s.retries > 0).then_some(RetryStrategy { limit: s.retries }),
        });
    }
    templates.insert(
        0,
        Template {
            name: "main".into(),
            inputs: None,
            outputs: None,
            dag: Some(Dag { tasks }),
            container: None,
            active_deadline_seconds: None,
            retry_strategy: None,
        },
    );
    let wf = Workflow {
        api_version: "argoproj.io/v1alpha1",
        kind: "Workflow",
        metadata: Metadata {
            generate_name: match k8s_name(&p.name) {
                n if n.is_empty() => "pipeline-".to_string(),
                n => format!("{n}-"),
            },
            annotations: BTreeMap::from([("loopml/pipeline".to_string(), p.name.clone())]),
        },
        spec: Spec {
            entrypoint: "main",
            arguments: (!p.params.is_empty()).then(|| Parameters {
                parameters: p
                    .params
                    .iter()
                    .map(|(k, v)| Parameter {
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            }),
            templates,
        },
    };
    serde_saphyr::to_string(&wf).map_err(|e| Error::Export(e.to_string()))
}

/// Parses a `--output STEP.KEY=VALUE` argument of `loopml pipeline step` into the upstream
/// outputs [`crate::run_step`] takes (step names may hold dots; the key is after the last one).
pub fn parse_output_arg(
    arg: &str,
    into: &mut BTreeMap<String, BTreeMap<String, String>>,
) -> Result<()> {
    let bad = || {
        Error::Options(format!(
            "`{arg}` is not STEP.KEY=VALUE (e.g. train.run_id=0123abcd)"
        ))
    };
    let (name, value) = arg.split_once('=').ok_or_else(bad)?;
    let (step, key) = name.rsplit_once('.').ok_or_else(bad)?;
    if !template::is_name(step) || !template::is_output_key(key) {
        return Err(bad());
    }
    into.entry(step.to_string())
        .or_default()
        .insert(key.to_string(), value.to_string());
    Ok(())
}

/// Writes a step's outputs into `dir`, one file per key holding the value (what Argo reads as
/// output parameters; `loopml pipeline step --outputs-dir`).
pub fn write_outputs(dir: &Path, outputs: &BTreeMap<String, String>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for (k, v) in outputs {
        if !template::is_output_key(k) {
            continue;
        }
        let path = dir.join(k);
        std::fs::write(&path, v).map_err(|source| Error::Write { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::path::Path;

    const PIPELINE: &str = r#"
name: churn_retrain
params:
  rows: 5000
  data: data/fresh.csv
  required:
env: {SEED: "7", DATA: "${params.data}"}
steps:
  - name: generate
    run: python generate.py --rows ${params.rows} --out ${params.data} && echo "n=${params.rows}" >> "$LOOPML_STEP_OUTPUTS"
    outputs: ["${params.data}"]
    timeout: 10m
    retries: 2
  - name: check
    needs: [generate]
    validate: {data: "${params.data}", suite: suite.yaml}
  - name: train.model
    needs: [check]
    run: python train.py --data ${params.data} --n ${steps.generate.n}
  - name: register
    needs: [train.model]
    register: {model: churn, from: train.model}
  - name: gate
    needs: [register]
    gate: {model: churn, challenger: register, metric: roc_auc, margin: 0.01}
  - name: promote
    needs: [gate]
    promote: {model: churn, version: register}
"#;

    fn export(opts: &ArgoOptions) -> Value {
        let p = Pipeline::from_yaml(PIPELINE, Path::new("/src/pipeline.yaml")).unwrap();
        let text = export_argo(&p, opts).unwrap();
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn template<'a>(wf: &'a Value, name: &str) -> &'a Value {
        wf["spec"]["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no template {name}"))
    }

    fn env<'a>(t: &'a Value, name: &str) -> Option<&'a str> {
        t["container"]["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
    }

    #[test]
    fn workflow_mirrors_the_dag() {
        let wf = export(&ArgoOptions {
            tracking_uri: Some("http://loopml:5000".into()),
            ..Default::default()
        });
        assert_eq!(wf["apiVersion"], "argoproj.io/v1alpha1");
        assert_eq!(wf["kind"], "Workflow");
        assert_eq!(wf["metadata"]["generateName"], "churn-retrain-");
        assert_eq!(wf["spec"]["entrypoint"], "main");
        let params = wf["spec"]["arguments"]["parameters"].as_array().unwrap();
        assert_eq!(params.len(), 3);
        let rows = params.iter().find(|p| p["name"] == "rows").unwrap();
        assert_eq!(rows["value"], "5000", "parameter values stay strings");
        let required = params.iter().find(|p| p["name"] == "required").unwrap();
        assert!(
            required.get("value").is_none(),
            "no default: given at submit"
        );

        let tasks = template(&wf, "main")["dag"]["tasks"].as_array().unwrap();
        let deps: Vec<(String, Vec<String>)> = tasks
            .iter()
            .map(|t| {
                let d = t["dependencies"]
                    .as_array()
                    .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                (t["name"].as_str().unwrap().to_string(), d)
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            deps,
            vec![
                ("generate".to_string(), vec![]),
                ("check".into(), s(&["generate"])),
                ("train-model".into(), s(&["check"])),
                ("register".into(), s(&["train-model"])),
                ("gate".into(), s(&["register"])),
                ("promote".into(), s(&["gate"])),
            ]
        );
        for t in tasks {
            assert_eq!(t["name"], t["template"]);
        }
        // 1 dag + 6 steps.
        assert_eq!(wf["spec"]["templates"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn command_steps_run_sh_with_workflow_parameters() {
        let wf = export(&ArgoOptions::default());
        let g = template(&wf, "generate");
        assert_eq!(g["container"]["image"], "python:3.12-slim");
        assert_eq!(g["container"]["workingDir"], "/work");
        let cmd = g["container"]["command"].as_array().unwrap();
        assert_eq!(cmd[0], "sh");
        assert_eq!(cmd[1], "-c");
        let script = cmd[2].as_str().unwrap();
        assert!(
            script.contains(
                "python generate.py --rows {{workflow.parameters.rows}} --out {{workflow.parameters.data}}"
            ),
            "{script}"
        );
        assert!(!script.contains("${params"), "{script}");
        assert_eq!(g["activeDeadlineSeconds"], 600);
        assert_eq!(g["retryStrategy"]["limit"], 2);
        assert_eq!(env(g, "SEED"), Some("7"));
        assert_eq!(env(g, "DATA"), Some("{{workflow.parameters.data}}"));
        assert_eq!(
            env(g, "LOOPML_PARAM_ROWS"),
            Some("{{workflow.parameters.rows}}")
        );
        assert_eq!(env(g, "MLFLOW_TRACKING_URI"), None, "none given");
        // `n` is used downstream: published as an output parameter.
        assert_eq!(env(g, "LOOPML_STEP_OUTPUTS"), Some(OUTPUTS_FILE));
        let out = &g["outputs"]["parameters"][0];
        assert_eq!(out["name"], "n");
        assert_eq!(out["valueFrom"]["path"], "/tmp/loopml/outputs/n");

        let t = template(&wf, "train-model");
        // Its `run_id` is used by `register`.
        assert_eq!(env(t, "LOOPML_STEP_OUTPUTS"), Some(OUTPUTS_FILE));
        assert_eq!(t["activeDeadlineSeconds"], 3600);
        assert!(t.get("retryStrategy").is_none());
        let script = t["container"]["command"][2].as_str().unwrap();
        assert!(
            script.contains("--n {{inputs.parameters.generate-n}}"),
            "{script}"
        );
        assert_eq!(t["inputs"]["parameters"][0]["name"], "generate-n");
        let main = template(&wf, "main");
        let task = main["dag"]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "train-model")
            .unwrap();
        assert_eq!(
            task["arguments"]["parameters"][0]["value"],
            "{{tasks.generate.outputs.parameters.n}}"
        );
    }

    #[test]
    fn built_in_steps_run_loopml_with_upstream_outputs() {
        let wf = export(&ArgoOptions {
            tracking_uri: Some("http://loopml:5000".into()),
            loopml_image: "ghcr.io/x/loopml:1".into(),
            ..Default::default()
        });
        let r = template(&wf, "register");
        assert_eq!(r["container"]["image"], "ghcr.io/x/loopml:1");
        assert_eq!(env(r, "MLFLOW_TRACKING_URI"), Some("http://loopml:5000"));
        let cmd: Vec<&str> = r["container"]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            &cmd[..6],
            &[
                "loopml",
                "pipeline",
                "step",
                "/work/pipeline.yaml",
                "--step",
                "register"
            ]
        );
        assert!(
            cmd.contains(&"rows={{workflow.parameters.rows}}"),
            "{cmd:?}"
        );
        assert!(
            cmd.contains(&"train.model.run_id={{inputs.parameters.train-model-run_id}}"),
            "{cmd:?}"
        );
        assert_eq!(
            cmd[cmd.len() - 2..],
            ["--outputs-dir", "/tmp/loopml/outputs"]
        );
        // The register step publishes `version` for gate and promote.
        assert_eq!(r["outputs"]["parameters"][0]["name"], "version");
        let t = template(&wf, "train-model");
        assert_eq!(t["outputs"]["parameters"][0]["name"], "run_id");
        let g = template(&wf, "gate");
        let gcmd = g["container"]["command"].to_string();
        assert!(
            gcmd.contains("register.version={{inputs.parameters.register-version}}"),
            "{gcmd}"
        );
        let p = template(&wf, "promote");
        assert!(
            p["container"]["command"]
                .to_string()
                .contains("register.version=")
        );
    }

    #[test]
    fn outputs_nobody_uses_go_nowhere() {
        let p = Pipeline::from_yaml(
            "name: p\nsteps:\n  - {name: a, run: 'echo x=1 >> $LOOPML_STEP_OUTPUTS'}\n",
            Path::new("p.yaml"),
        )
        .unwrap();
        let wf: Value =
            serde_saphyr::from_str(&export_argo(&p, &ArgoOptions::default()).unwrap()).unwrap();
        let a = template(&wf, "a");
        assert_eq!(env(a, "LOOPML_STEP_OUTPUTS"), Some("/dev/null"));
        assert_eq!(
            a["container"]["command"][2],
            "echo x=1 >> $LOOPML_STEP_OUTPUTS"
        );
        assert!(a.get("outputs").is_none());
        assert!(wf["spec"].get("arguments").is_none());
    }

    #[test]
    fn output_arguments_and_files() {
        let mut up = BTreeMap::new();
        parse_output_arg("train.model.run_id=abc=1", &mut up).unwrap();
        parse_output_arg("register.version=3", &mut up).unwrap();
        assert_eq!(up["train.model"]["run_id"], "abc=1");
        assert_eq!(up["register"]["version"], "3");
        for bad in ["noequals", "nodot=1", ".k=1", "a.=1", "a b.k=1"] {
            assert!(parse_output_arg(bad, &mut up).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("outputs");
        write_outputs(&out, &up["register"]).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("version")).unwrap(), "3");
    }

    #[test]
    fn name_collisions_are_errors() {
        let p = Pipeline::from_yaml(
            "name: p\nsteps:\n  - {name: a_b, run: x}\n  - {name: a.b, run: x}\n",
            Path::new("p.yaml"),
        )
        .unwrap();
        let e = export_argo(&p, &ArgoOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`a_b`") && e.contains("`a.b`") && e.contains("a-b"),
            "{e}"
        );
    }
}
