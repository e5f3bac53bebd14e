//! A real node with the in-memory store, for the targets that feed client
//! frames through the node (each includes it with
//! `#[path = "common/node.rs"] mod node;`).

use std::collections::VecDeque;
use std::time::Instant;

use weir_core::store::MemoryStore;
use weir_core::{Config, Input, Model, Node, Output, SeededIds, StoreConfig};

/// A node and its store at one fixed instant: [`Rig::feed`] carries out
/// the store operations an input leads to, as a runtime does.
pub struct Rig {
    pub node: Node,
    store: MemoryStore,
    now: Instant,
}

impl Rig {
    pub fn new(config: Config) -> Self {
        #[allow(clippy::disallowed_methods)] // the node only compares instants
        let now = Instant::now();
        Self {
            node: Node::new(config, SeededIds::new(1), now, 1_800_000_000_000),
            store: MemoryStore::new(Model::new(StoreConfig::default(), 1)),
            now,
        }
    }

    /// Feeds `input` and what it leads to; returns every output that is not
    /// the store's business.
    pub fn feed(&mut self, input: Input) -> Vec<Output> {
        // In order, as the runtime feeds them.
        let mut inbox = VecDeque::from([input]);
        let mut out = Vec::new();
        while let Some(input) = inbox.pop_front() {
            self.node.handle_input(self.now, input);
            while let Some(output) = self.node.poll_output() {
                match output {
                    Output::Store { op, request } => inbox.extend(self.store.apply(op, request)),
                    Output::Subscribe(topic) => self.store.subscribe(&topic),
                    Output::Unsubscribe(topic) => self.store.unsubscribe(&topic),
                    other => out.push(other),
                }
            }
        }
        out
    }
}
