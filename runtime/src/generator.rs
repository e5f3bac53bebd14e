//! Generators as tasks: each reply's generator runs as its own task,
//! reports through the driver's channel as `Input::Generator`, and is aborted
//! when the core says `AbortGenerator` (an aborted task reports nothing more).
//!
//! Two generators: the demo one (below) and `openai`, an OpenAI-compatible
//! upstream (`crate::openai`: the client, and its task in `openai/task.rs`).

use std::sync::Arc;
use std::time::Duration;

use weir_core::demo::{DemoPrompt, DemoText};
use weir_core::ids::MessageId;
use weir_core::wire::{Message, Usage};
use weir_core::{GeneratorEvent, Input};

use crate::mailbox::ToDriver;
use crate::metrics::Metrics;
use crate::rt::{sleep_until, yield_now, Runtime};
use crate::{openai, GeneratorConfig};

/// The longest pause between two demo chunks (a tiny positive rate).
const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// Starts the generator of reply `message_id` for `context` (the
/// conversation's turns, the new user turn last). Returns the task
/// (dropping it aborts the generator).
pub(crate) fn spawn<R: Runtime>(
    config: &GeneratorConfig,
    tx: async_channel::Sender<ToDriver>,
    message_id: MessageId,
    context: &[Message],
    metrics: &Arc<Metrics>,
) -> R::Task {
    match *config {
        GeneratorConfig::Openai(ref config) => openai::task::spawn::<R>(
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
            let prompt = DemoPrompt::of(context);
            // A `[pace=MS]` prompt sets its own pace (weir_core::demo).
            let period = prompt
                .pace
                .map(|p| p.min(MAX_PERIOD))
                .or_else(|| period(rate_per_sec));
            R::spawn(demo::<R>(tx, message_id, prompt, chunks, period))
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
/// `period` (the configured rate's, or the prompt's own `[pace=MS]`), then
/// `Finished` with the word counts as usage.
async fn demo<R: Runtime>(
    tx: async_channel::Sender<ToDriver>,
    message_id: MessageId,
    prompt: DemoPrompt,
    chunks: u32,
    period: Option<Duration>,
) {
    let event = |event| {
        ToDriver::Input(Input::Generator {
            message_id: message_id.clone(),
            event,
        })
    };
    // The next tick: one period after the last one, not after the last
    // wake-up, so a late tick is made up at once and the average rate holds
    // even when the period is below the timer's resolution.
    let period = period.filter(|p| !p.is_zero());
    let mut next = R::now();
    let mut sent = 0u64;
    for chunk in DemoText::new(&prompt.text, chunks) {
        match period {
            Some(p) => {
                next += p;
                sleep_until::<R>(Some(next)).await;
            }
            None => yield_now().await,
        }
        if tx.send(event(GeneratorEvent::Delta(chunk))).await.is_err() {
            return; // the driver is gone
        }
        sent += 1;
    }
    let usage = Some(Usage {
        prompt_tokens: prompt.tokens,
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
