//! Generators as tasks: each reply's generator runs as its own tokio task,
//! reports through the driver's channel as `Input::Generator`, and is aborted
//! when the core says `AbortGenerator` (an aborted task reports nothing more).
//!
//! Two generators: the demo one (below) and `openai`, an OpenAI-compatible
//! upstream (`crate::openai`: the runtime-neutral client, and its tokio glue
//! in `openai/tokio_rt.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use weir_core::demo::DemoText;
use weir_core::ids::MessageId;
use weir_core::wire::{Message, Role, Usage};
use weir_core::{GeneratorEvent, Input};

use crate::driver::ToDriver;
use crate::metrics::Metrics;
use crate::{openai, GeneratorConfig};

/// The longest pause between two demo chunks (a tiny positive rate).
const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// Starts the generator of reply `message_id` for `context` (the
/// conversation's turns, the new user turn last). Returns the task's handle.
pub(crate) fn spawn(
    config: &GeneratorConfig,
    tx: mpsc::Sender<ToDriver>,
    message_id: MessageId,
    context: &[Message],
    metrics: &Arc<Metrics>,
) -> tokio::task::AbortHandle {
    match *config {
        GeneratorConfig::Openai(ref config) => openai::tokio_rt::spawn(
            config.clone(),
            metrics.clone(),
            tx,
            message_id,
            context.to_vec(),
        ),
        GeneratorConfig::Demo {
            chunks,
            rate_per_sec,
        } => {
            let prompt = context
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.clone())
                .unwrap_or_default();
            let prompt_tokens = context
                .iter()
                .map(|m| m.content.split_whitespace().count() as u64)
                .sum();
            tokio::spawn(demo(
                tx,
                message_id,
                prompt,
                prompt_tokens,
                chunks,
                period(rate_per_sec),
            ))
            .abort_handle()
        }
    }
}

/// The pause between chunks at `rate` chunks per second; `None` (no pause)
/// unless the rate is a positive finite number.
fn period(rate: f64) -> Option<Duration> {
    if !(rate.is_finite() && rate > 0.0) {
        return None;
    }
    Some(Duration::try_from_secs_f64(1.0 / rate).map_or(MAX_PERIOD, |p| p.min(MAX_PERIOD)))
}

/// The demo generator: `DemoText::new(prompt, chunks)`, one chunk per
/// `period`, then `Finished` with the word counts as usage.
async fn demo(
    tx: mpsc::Sender<ToDriver>,
    message_id: MessageId,
    prompt: String,
    prompt_tokens: u64,
    chunks: u32,
    period: Option<Duration>,
) {
    let event = |event| {
        ToDriver::Input(Input::Generator {
            message_id: message_id.clone(),
            event,
        })
    };
    let mut ticker = period.filter(|p| !p.is_zero()).map(|p| {
        let mut t = interval_at(Instant::now() + p, p);
        // A late tick is made up at once, so the average rate holds even
        // when the period is below the timer's resolution.
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    let mut sent = 0u64;
    for chunk in DemoText::new(&prompt, chunks) {
        match ticker.as_mut() {
            Some(t) => {
                t.tick().await;
            }
            None => tokio::task::yield_now().await,
        }
        if tx.send(event(GeneratorEvent::Delta(chunk))).await.is_err() {
            return; // the driver is gone
        }
        sent += 1;
    }
    let usage = Some(Usage {
        prompt_tokens,
        completion_tokens: sent,
    });
    let _ = tx.send(event(GeneratorEvent::Finished { usage })).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_of_a_rate() {
        assert_eq!(period(4.0), Some(Duration::from_millis(250)));
        assert_eq!(period(0.0), None);
        assert_eq!(period(-1.0), None);
        assert_eq!(period(f64::NAN), None);
        assert_eq!(period(f64::INFINITY), None);
        assert_eq!(period(1e-300), Some(MAX_PERIOD));
    }
}
