# syntax=docker/dockerfile:1

# Stage 1: the Socket.IO browser client, installed from npm (never committed, no CDN at run time).
FROM node:20-bookworm-slim AS browser-deps
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# Stage 2: the app, run by Gunicorn with one worker, as a non-root user.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=5000
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY --from=browser-deps /build/node_modules/socket.io-client/dist/socket.io.min.js \
     node_modules/socket.io-client/dist/socket.io.min.js
COPY app.py settings.py sqs_queue.py sqs_producer.py sqs_consumer.py gunicorn.conf.py ./
COPY templates/ templates/
COPY static/ static/
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '5000'), timeout=2)"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"]
