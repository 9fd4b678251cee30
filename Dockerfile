# tokenkeeper's image: the package and its dependencies on a slim Python base,
# run as a non-root user with no shell tricks. Build with `docker build .`.
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt .

FROM python:3.11.14-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
# A numeric user, so runAsNonRoot can verify it without an /etc/passwd entry.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["tokenkeeper"]
CMD ["run", "--log-format=json", "--liveness=http://0.0.0.0:8080/healthz"]
