"""The console: server-rendered pages for the people who own the score (customer success,
sales, RevOps), served by the API process under /console. It reads and writes through the
same functions as the JSON API; its charts are SVG drawn on the server (charts.py), its
script (static/console.js) only shows times in the viewer's zone and fills a printed
sign-in link, and nothing it needs comes from the network.
"""
