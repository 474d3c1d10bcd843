"""One module per page of the web UI; ``fnhost.ui.routes`` puts their routers together."""
