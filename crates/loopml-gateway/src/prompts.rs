//! Prompts rendered by reference: a chat request with `prompt_id: "prompts:/support@prod"` and
//! `prompt_variables` (LiteLLM's prompt-management fields) gets the registered prompt's
//! messages, with `{{variable}}` filled in, in front of its own messages, and the prompt's
//! `model_config` and `response_format` where the request sets none. An application changes
//! prompt by moving an alias, without a deploy. The registry is reached through [`Prompts`],
//! which the binary implements over loopml's model registry.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

/// A registered prompt version as the gateway needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTemplate {
    /// Text (a string) or chat messages (`[{role, content}]`).
    pub template: Value,
    /// MLflow's `model_config` (`temperature`, `max_tokens`, …).
    pub model_config: Option<Value>,
    /// MLflow's `response_format` (a JSON schema).
    pub response_format: Option<Value>,
}

/// Resolves `prompts:/name@alias`, `prompts:/name/version` or a bare name (its latest).
pub trait Prompts: Send + Sync {
    /// The prompt version `uri` names, or why not.
    fn resolve(&self, uri: String) -> BoxFuture<'static, Result<PromptTemplate, String>>;
}

/// Shared handle to a prompt source.
pub type PromptSource = Arc<dyn Prompts>;

/// `text` with each `{{ name }}` replaced; errors list the variables not given.
pub fn fill(text: &str, vars: &Map<String, Value>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = after[..end].trim();
        let valid = !name.is_empty()
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if valid {
            match vars.get(name) {
                Some(Value::String(s)) => out.push_str(s),
                Some(v) => out.push_str(&v.to_string()),
                None => {
                    missing.push(name.to_string());
                    out.push_str(&rest[start..start + 2 + end + 2]);
                }
            }
        } else {
            out.push_str(&rest[start..start + 2 + end + 2]);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        missing.sort();
        missing.dedup();
        Err(missing)
    }
}

/// Applies a prompt to a chat request body (`prompt_id` and `prompt_variables` removed).
pub fn apply(body: &mut Value, p: &PromptTemplate) -> Result<(), String> {
    let vars = match body.get("prompt_variables") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err("\"prompt_variables\" must be an object".into()),
    };
    let render = |t: &str| {
        fill(t, &vars).map_err(|m| {
            format!(
                "the prompt needs the variables {} in \"prompt_variables\"",
                m.join(", ")
            )
        })
    };
    let mut messages: Vec<Value> = match &p.template {
        Value::String(t) => vec![json!({"role": "user", "content": render(t)?})],
        Value::Array(msgs) => msgs
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if let Some(t) = m["content"].as_str() {
                    m["content"] = json!(render(t)?);
                }
                Ok(m)
            })
            .collect::<Result<_, String>>()?,
        _ => return Err("the registered prompt's template is neither text nor messages".into()),
    };
    if let Some(extra) = body["messages"].as_array() {
        messages.extend(extra.iter().cloned());
    }
    let Some(obj) = body.as_object_mut() else {
        return Err("the request body must be an object".into());
    };
    obj.remove("prompt_id");
    obj.remove("prompt_variables");
    obj.remove("prompt_version");
    obj.insert("messages".into(), Value::Array(messages));
    if let Some(Value::Object(cfg)) = &p.model_config {
        for (from, to) in [
            ("temperature", "temperature"),
            ("max_tokens", "max_tokens"),
            ("top_p", "top_p"),
            ("stop_sequences", "stop"),
            ("frequency_penalty", "frequency_penalty"),
            ("presence_penalty", "presence_penalty"),
            ("seed", "seed"),
        ] {
            if let Some(v) = cfg.get(from)
                && !obj.contains_key(to)
            {
                obj.insert(to.into(), v.clone());
            }
        }
    }
    if let Some(schema) = &p.response_format
        && !obj.contains_key("response_format")
    {
        obj.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_fill_and_missing_ones_are_named() {
        let vars: Map<String, Value> =
            serde_json::from_value(json!({"q": "why", "n": 3})).unwrap_or_default();
        assert_eq!(
            fill("Ask {{ q }} {{n}} times", &vars),
            Ok("Ask why 3 times".into())
        );
        assert_eq!(
            fill("{{x}} and {{ y }}", &vars),
            Err(vec!["x".into(), "y".into()])
        );
        assert_eq!(
            fill("{{ not a var }} {{", &vars),
            Ok("{{ not a var }} {{".into())
        );
    }

    #[test]
    fn chat_prompts_go_first_with_their_config() {
        let p = PromptTemplate {
            template: json!([{"role": "system", "content": "Be {{tone}}."},
                {"role": "user", "content": "{{question}}"}]),
            model_config: Some(json!({"temperature": 0.1, "max_tokens": 50})),
            response_format: Some(json!({"type": "object"})),
        };
        let mut body = json!({"model": "chat", "prompt_id": "prompts:/s@prod", "temperature": 0.9,
            "prompt_variables": {"tone": "kind", "question": "hi?"},
            "messages": [{"role": "user", "content": "and more"}]});
        apply(&mut body, &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body["messages"][0]["content"], "Be kind.");
        assert_eq!(body["messages"][1]["content"], "hi?");
        assert_eq!(body["messages"][2]["content"], "and more");
        assert_eq!(body["temperature"], 0.9, "the request's own setting wins");
        assert_eq!(body["max_tokens"], 50);
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert!(body.get("prompt_id").is_none());
        let mut bad = json!({"prompt_id": "x"});
        assert!(apply(&mut bad, &p).is_err());
    }
}
