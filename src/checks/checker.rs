//! The handle the registrar tells the check scheduler through. It sits
//! apart from the scheduler so that the registrar, which sends, and the
//! scheduler, which calls the registrar, do not import each other.

use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::service::Instance;

/// What the scheduler is told.
pub(super) enum Command {
    /// Start checking this instance (or restart, if it replaced one).
    Watch(Arc<Instance>),
    /// Stop checking this id at once, aborting a check in flight.
    Forget(Uuid),
}

/// A cheap handle for telling the scheduler about instances. Sending never
/// waits.
#[derive(Clone)]
pub(crate) struct Checker {
    commands: mpsc::UnboundedSender<Command>,
}

/// The scheduler's end of the [`Checker`] channel.
pub(crate) struct CheckerInbox(pub(super) mpsc::UnboundedReceiver<Command>);

impl Checker {
    pub(crate) fn new() -> (Checker, CheckerInbox) {
        let (commands, inbox) = mpsc::unbounded_channel();
        (Checker { commands }, CheckerInbox(inbox))
    }

    /// Starts checking `instance` if it has a check; otherwise stops
    /// checking its id (a replacement may have dropped the check).
    pub(crate) fn watch(&self, instance: &Arc<Instance>) {
        let command = match instance.spec.check {
            Some(_) => Command::Watch(instance.clone()),
            None => Command::Forget(instance.id),
        };
        let _ = self.commands.send(command);
    }

    /// Stops checking `id`.
    pub(crate) fn forget(&self, id: Uuid) {
        let _ = self.commands.send(Command::Forget(id));
    }
}
