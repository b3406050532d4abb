//! ChatGPT's `conversations.json` (Settings → Data controls → Export): an array of
//! conversations, each a tree of nodes (`mapping`: id → `{ id, parent, children, message }`)
//! with `current_node`, the end of the branch ChatGPT showed. User and assistant text becomes
//! messages; system, tool and hidden nodes (and non-text content: code runs, images alone) are
//! skipped, their children moved up to the nearest message kept.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{Draft, DraftMessage, Problem, clean_text, parents_first};
use crate::chat::types::Role;

#[derive(Deserialize)]
struct Conversation {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    create_time: Option<f64>,
    mapping: HashMap<String, Node>,
    #[serde(default)]
    current_node: Option<String>,
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    message: Option<NodeMessage>,
}

#[derive(Deserialize)]
struct NodeMessage {
    author: Author,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    create_time: Option<f64>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
struct Author {
    role: String,
}

#[derive(Deserialize)]
struct Content {
    content_type: String,
    #[serde(default)]
    parts: Option<Vec<Value>>,
}

fn time(seconds: Option<f64>) -> Option<DateTime<Utc>> {
    let seconds = seconds?;
    if !seconds.is_finite() {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    DateTime::from_timestamp_millis((seconds * 1000.0) as i64)
}

/// `data`: the whole file (an array), or one conversation.
pub fn drafts(data: Value) -> Result<Vec<Draft>, Problem> {
    let conversations = match data {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(Problem::new(
                "data",
                "a ChatGPT export is an array of conversations",
            ));
        }
    };
    conversations
        .into_iter()
        .enumerate()
        .map(|(at, item)| {
            let path = format!("data[{at}]");
            let conversation: Conversation = serde_json::from_value(item).map_err(|error| {
                Problem::new(&path, &format!("not a ChatGPT conversation ({error})"))
            })?;
            draft(&path, conversation)
        })
        .collect()
}

/// The message a node becomes (without its parent yet; dated `otherwise` when the node has no
/// time), or `None` when it is skipped.
fn kept(node: &Node, otherwise: DateTime<Utc>) -> Option<DraftMessage> {
    let message = node.message.as_ref()?;
    let role = match message.author.role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        _ => return None,
    };
    let metadata = message.metadata.as_ref();
    let hidden = metadata
        .and_then(|m| m.get("is_visually_hidden_from_conversation"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let content = message.content.as_ref()?;
    if hidden || !matches!(content.content_type.as_str(), "text" | "multimodal_text") {
        return None;
    }
    let text: Vec<&str> = content
        .parts
        .iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let text = clean_text(&text.join("\n"));
    if text.trim().is_empty() {
        return None;
    }
    let model = metadata
        .and_then(|m| m.get("model_slug"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some(DraftMessage {
        parent: None,
        role,
        content: text,
        created_at: time(message.create_time).unwrap_or(otherwise),
        provider: (role == Role::Assistant).then(|| "openai".to_owned()),
        model,
    })
}

fn draft(path: &str, conversation: Conversation) -> Result<Draft, Problem> {
    let mapping = &conversation.mapping;
    let created_at = time(conversation.create_time).unwrap_or_else(Utc::now);
    for (id, node) in mapping {
        if let Some(parent) = &node.parent
            && !mapping.contains_key(parent)
        {
            return Err(Problem::new(
                &format!("{path}.mapping.{id}.parent"),
                "names a node that is not in the mapping",
            ));
        }
    }
    if let Some(current) = &conversation.current_node
        && !mapping.contains_key(current)
    {
        return Err(Problem::new(
            &format!("{path}.current_node"),
            "names a node that is not in the mapping",
        ));
    }
    // In time order, then moved so parents come before children.
    let when = |node: &Node| {
        node.message
            .as_ref()
            .and_then(|m| m.create_time)
            .unwrap_or(0.0)
    };
    let mut by_time: Vec<(&String, &Node)> = mapping.iter().collect();
    by_time.sort_by(|a, b| when(a.1).total_cmp(&when(b.1)).then(a.0.cmp(b.0)));
    let at: HashMap<&String, usize> = by_time
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let parents: Vec<Option<usize>> = by_time
        .iter()
        .map(|(_, node)| node.parent.as_ref().and_then(|p| at.get(p).copied()))
        .collect();
    let order: Vec<(&String, &Node)> = parents_first(&parents)
        .map_err(|i| {
            Problem::new(
                &format!("{path}.mapping.{}", by_time[i].0),
                "its parents form a cycle",
            )
        })?
        .into_iter()
        .map(|i| by_time[i])
        .collect();
    let mut index: HashMap<&String, usize> = HashMap::new();
    let mut messages = Vec::new();
    for (id, node) in &order {
        let Some(message) = kept(node, created_at) else {
            continue;
        };
        // The nearest kept ancestor.
        let mut parent = node.parent.as_ref();
        while let Some(p) = parent {
            if index.contains_key(p) {
                break;
            }
            parent = mapping.get(p).and_then(|node| node.parent.as_ref());
        }
        index.insert(id, messages.len());
        messages.push(DraftMessage {
            parent: parent.and_then(|p| index.get(p).copied()),
            ..message
        });
    }
    // The current node, or its nearest kept ancestor.
    let mut current = conversation.current_node.as_ref();
    while let Some(id) = current {
        if index.contains_key(id) {
            break;
        }
        current = mapping.get(id).and_then(|node| node.parent.as_ref());
    }
    Ok(Draft {
        title: conversation.title.unwrap_or_default(),
        created_at,
        current_leaf: current.and_then(|id| index.get(id).copied()),
        messages,
    })
}
