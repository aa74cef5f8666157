"""notify: the change events, delivered to webhook subscribers over HTTP.

It reads the changes topic like any other consumer (fanout.py: every event a subscription
matches becomes a delivery row, at most one per subscription and event id) and POSTs each
delivery signed as Standard Webhooks specify, retrying with back-off until it is delivered or
dead-lettered (sender.py). It runs apart from the scorer, so a slow or unreachable receiver
never slows scoring.
"""
