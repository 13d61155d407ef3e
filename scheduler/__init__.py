"""The scheduler: releases jobs whose time has come (retries after backoff), re-queues jobs of dead workers,
and sends messages the outbox still owes. Many may run; one leads, through a MongoDB lease."""
