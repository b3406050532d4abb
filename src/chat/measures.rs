//! The chat's metrics: replies by provider, model and outcome, time to first token, tokens.

use std::time::Duration;

use super::types::{MessageError, MessageErrorReason, MessageStatus, Usage};
use crate::providers::AiProvider;
use crate::telemetry::metrics::BoundedLabel;

/// Model names are the user's choice (any name the provider may know): the first 50 seen are
/// labelled as they are, later ones `other`.
static MODELS: BoundedLabel = BoundedLabel::new(50);

pub fn describe_metrics() {
    metrics::describe_counter!(
        "alias_chat_replies_total",
        "Chat replies ended, by provider, model and outcome (complete, stopped, or the failure's reason)."
    );
    metrics::describe_histogram!(
        "alias_chat_time_to_first_token_seconds",
        metrics::Unit::Seconds,
        "Time from a reply's start to its first text, by provider and model."
    );
    metrics::describe_counter!(
        "alias_chat_tokens_total",
        "Tokens the providers reported for replies, by provider, model and direction (input, output)."
    );
}

pub(super) fn first_text(provider: AiProvider, model: &str, after: Duration) {
    metrics::histogram!(
        "alias_chat_time_to_first_token_seconds",
        "provider" => provider.as_str(),
        "model" => MODELS.value(model),
    )
    .record(after.as_secs_f64());
}

pub(super) fn reply_ended(
    provider: AiProvider,
    model: &str,
    status: MessageStatus,
    error: Option<&MessageError>,
    usage: Option<&Usage>,
) {
    let model = MODELS.value(model);
    let outcome = error.map_or(status.as_str(), |error| reason(error.reason));
    metrics::counter!(
        "alias_chat_replies_total",
        "provider" => provider.as_str(),
        "model" => model.clone(),
        "outcome" => outcome,
    )
    .increment(1);
    let Some(usage) = usage else {
        return;
    };
    for (direction, tokens) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
    ] {
        metrics::counter!(
            "alias_chat_tokens_total",
            "provider" => provider.as_str(),
            "model" => model.clone(),
            "direction" => direction,
        )
        .increment(u64::from(tokens));
    }
}

fn reason(reason: MessageErrorReason) -> &'static str {
    match reason {
        MessageErrorReason::ApiKeyRejected => "api_key_rejected",
        MessageErrorReason::ProviderRateLimited => "provider_rate_limited",
        MessageErrorReason::ProviderOverloaded => "provider_overloaded",
        MessageErrorReason::ProviderTimeout => "provider_timeout",
        MessageErrorReason::ProviderError => "provider_error",
        MessageErrorReason::Interrupted => "interrupted",
        MessageErrorReason::Internal => "internal",
    }
}
