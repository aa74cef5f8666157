"""The pure scoring core: model files, event-time aggregates, scores and explanations.

No I/O, no asyncio, no globals: the scorer service, the API and the back-tester all call the
same functions, and the tests call them with plain values.
"""
