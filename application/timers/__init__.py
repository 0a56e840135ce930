"""Due times (timers, reminders, overdue dates, message waits) and the scheduler that fires them."""
