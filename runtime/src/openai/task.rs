//! The `openai` generator as a task: the runtime's TCP connect and timer,
//! one task per reply, and the metrics. All of the HTTP and the stream
//! parsing is in the parent module.

use std::sync::Arc;

use weir_core::ids::MessageId;
use weir_core::wire::Message;
use weir_core::{GeneratorEvent, Input};

use super::{generate, Ended, OpenAiConfig, Tally};
use crate::mailbox::ToDriver;
use crate::metrics::{Metrics, TokenOutcome};
use crate::rt::Runtime;

/// Starts the generation of reply `message_id` as a task. Aborting the task
/// drops the connection, which closes the upstream request at once.
pub(crate) fn spawn<R: Runtime>(
    config: OpenAiConfig,
    metrics: Arc<Metrics>,
    tx: async_channel::Sender<ToDriver>,
    message_id: MessageId,
    context: Vec<Message>,
) -> R::Task {
    R::spawn(async move {
        let mut account = Account {
            metrics,
            message_id: message_id.clone(),
            tally: Tally::default(),
            ended: None,
        };
        let tx = &tx;
        let emit = move |event: GeneratorEvent| {
            let send = tx.send(ToDriver::Input(Input::Generator {
                message_id: message_id.clone(),
                event,
            }));
            async move { send.await.is_ok() }
        };
        let ended = generate(
            &config,
            R::connect(config.upstream.host(), config.upstream.port()),
            &R::timer(),
            &context,
            &mut account.tally,
            emit,
        )
        .await;
        account.ended = Some(ended);
    })
}

/// Accounts for one generation when it is dropped: when it ended, and also
/// when it was aborted half-way (a cancel, or the reply settled otherwise).
struct Account {
    metrics: Arc<Metrics>,
    message_id: MessageId,
    tally: Tally,
    /// `None` while running, so a drop before the end means "aborted".
    ended: Option<Ended>,
}

impl Drop for Account {
    fn drop(&mut self) {
        let outcome = match &self.ended {
            Some(Ended::Completed) => TokenOutcome::Completed,
            Some(Ended::Failed(e)) => {
                tracing::warn!(
                    message_id = %self.message_id,
                    reason = %e.reason(),
                    "openai generator failed: {e}"
                );
                self.metrics.upstream_error(e.kind());
                TokenOutcome::Failed
            }
            // Aborted by the core, or nobody listened any more.
            Some(Ended::Unheard) | None => TokenOutcome::Cancelled,
        };
        tracing::debug!(
            message_id = %self.message_id,
            ?outcome,
            deltas = self.tally.content_deltas,
            first_token = ?self.tally.first_token,
            usage = ?self.tally.reported,
            "openai generation ended"
        );
        self.metrics.upstream_generation(outcome, &self.tally);
    }
}
