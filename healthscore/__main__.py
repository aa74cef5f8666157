from healthscore.cli import app

app()
